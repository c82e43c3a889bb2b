// etcd server built from go.etcd.io/etcd/server/v3 (etcd's own main is in a module with
// local replace directives, so it cannot be `go install`ed directly).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
