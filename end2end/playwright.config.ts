import { defineConfig } from "@playwright/test";

// Tidemark's browser suite: the release build served by `tidemark serve` on a throw-away
// SQLite database, driven in Debian's Chromium (downloaded browsers are unavailable here).
const bin = process.env.TIDEMARK_BIN ?? "target/release/tidemark";
const port = Number(process.env.TIDEMARK_E2E_PORT ?? 3100);
const idpPort = Number(process.env.TIDEMARK_E2E_IDP_PORT ?? 3190);
// The webhook receiver notifications go to (end2end/support/receiver.mjs); its HMAC key.
const receiverPort = Number(process.env.TIDEMARK_E2E_RECEIVER_PORT ?? 3192);
const hookSecret = "e2e-hook-secret";
const base = `http://127.0.0.1:${port}`;
const sandboxPort = Number(process.env.TIDEMARK_E2E_SANDBOX_PORT ?? 3644);
const config = "--config end2end/tidemark.e2e.toml";
// `tidemark demo` (what `make run` starts), on its own ports, for the README walkthrough.
const demoPort = Number(process.env.TIDEMARK_E2E_DEMO_PORT ?? 3400);
const demoSandboxPort = Number(process.env.TIDEMARK_E2E_DEMO_SANDBOX_PORT ?? 6743);
// Two local deployers for four-eyes approvals (passwords on stdin, never on the command line).
const users = ["deployer1", "deployer2"]
  .map((u, i) => `echo ${u}-password | ${bin} user add ${u} --display-name "Deployer ${i + 1}" --password-stdin ${config} >/dev/null`)
  .join(" && ");

export default defineConfig({
  testDir: "./tests",
  outputDir: "./test-results",
  fullyParallel: false,
  workers: 1,
  retries: 0,
  reporter: [["list"]],
  timeout: 30_000,
  projects: [
    // Signs in as the bootstrap admin once; the other tests start from that session.
    { name: "setup", testMatch: /.*\.setup\.ts/ },
    {
      name: "chromium",
      dependencies: ["setup"],
      use: { storageState: "artifacts/admin.json" },
    },
  ],
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
      command: `rm -rf end2end/artifacts/demo && ${bin} demo --dir end2end/artifacts/demo --listen 127.0.0.1:${demoPort} --sandbox 127.0.0.1:${demoSandboxPort}`,
      url: `http://127.0.0.1:${demoPort}/readyz`,
      env: { RUST_LOG: "warn" },
      reuseExistingServer: false,
      timeout: 60_000,
    },
    {
      // The world: a Git repository made with the git CLI and the sandbox cluster.
      cwd: "..",
      command: "end2end/support/env.sh",
      url: `http://127.0.0.1:${sandboxPort}/version`,
      env: { SANDBOX_PORT: String(sandboxPort), TIDEMARK_BIN: bin },
      reuseExistingServer: false,
      timeout: 30_000,
    },
    {
      // A certified OpenID provider from npm (the single sign-on tests sign in through it).
      command: "node support/oidc-provider.mjs",
      url: `http://127.0.0.1:${idpPort}/.well-known/openid-configuration`,
      env: { IDP_PORT: String(idpPort), TIDEMARK_URL: base },
      reuseExistingServer: false,
      timeout: 30_000,
    },
    {
      command: "node support/receiver.mjs",
      url: `http://127.0.0.1:${receiverPort}/healthz`,
      env: { RECEIVER_PORT: String(receiverPort), E2E_HOOK_SECRET: hookSecret },
      reuseExistingServer: false,
      timeout: 30_000,
    },
    {
      cwd: "..",
      command: `rm -rf end2end/artifacts/db end2end/artifacts/git-cache && mkdir -p end2end/artifacts/db && ${users} && ${bin} serve ${config}`,
      url: `${base}/readyz`,
      env: {
        TIDEMARK__SERVER__LISTEN: `127.0.0.1:${port}`,
        TIDEMARK__SERVER__PUBLIC_URL: base,
        TIDEMARK__AUTH__OIDC__ISSUER_URL: `http://127.0.0.1:${idpPort}`,
        TIDEMARK__AUTH__ADMIN_PASSWORD: "e2e-admin-password",
        E2E_HOOK_SECRET: hookSecret,
        RUST_LOG: "warn",
      },
      reuseExistingServer: false,
      timeout: 60_000,
      stdout: "pipe",
      stderr: "pipe",
    },
  ],
});
