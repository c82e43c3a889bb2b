import { defineConfig } from "@playwright/test";

// The operator's walk on a real Kubernetes control plane (scripts/kube-env.sh: kube-apiserver,
// controller-manager, scheduler, etcd and kwok nodes), run by `make e2e-kube`, which starts the
// control plane first and passes its kubeconfig in KUBECONFIG_PATH.
const bin = process.env.TIDEMARK_BIN ?? "target/release/tidemark";
const base = "http://127.0.0.1:3500";
const config = "--config end2end/artifacts/kube/tidemark.toml";
const users = ["deployer1", "deployer2"]
  .map((u, i) => `echo ${u}-password | ${bin} user add ${u} --display-name "Deployer ${i + 1}" --password-stdin ${config} >/dev/null`)
  .join(" && ");

export default defineConfig({
  testDir: "./tests",
  testMatch: /kube\.walk\.ts/,
  outputDir: "./test-results-kube",
  fullyParallel: false,
  workers: 1,
  retries: 0,
  reporter: [["list"]],
  timeout: 90_000,
  use: {
    baseURL: base,
    trace: "retain-on-failure",
    launchOptions: {
      executablePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium",
      args: [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
      ],
    },
  },
  webServer: [
    {
      cwd: "..",
      command: `end2end/support/kube-world.sh && ${users} && ${bin} serve ${config}`,
      url: `${base}/readyz`,
      env: { TIDEMARK__AUTH__ADMIN_PASSWORD: "e2e-admin-password", RUST_LOG: "warn" },
      reuseExistingServer: false,
      timeout: 60_000,
    },
  ],
});
