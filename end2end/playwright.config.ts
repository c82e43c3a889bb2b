import { defineConfig } from "@playwright/test";

// Tidemark's browser suite: the release build served by `tidemark serve` on a throw-away
// SQLite database, driven in Debian's Chromium (downloaded browsers are unavailable here).
const bin = process.env.TIDEMARK_BIN ?? "target/release/tidemark";
const port = Number(process.env.TIDEMARK_E2E_PORT ?? 3100);

export default defineConfig({
  testDir: "./tests",
  outputDir: "./test-results",
  fullyParallel: false,
  workers: 1,
  retries: 0,
  reporter: [["list"]],
  timeout: 30_000,
  use: {
    baseURL: `http://127.0.0.1:${port}`,
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
  webServer: {
    cwd: "..",
    command: `rm -rf end2end/artifacts/db && ${bin} serve --config end2end/tidemark.e2e.toml`,
    url: `http://127.0.0.1:${port}/readyz`,
    env: { TIDEMARK__SERVER__LISTEN: `127.0.0.1:${port}`, RUST_LOG: "warn" },
    reuseExistingServer: false,
    timeout: 60_000,
    stdout: "pipe",
    stderr: "pipe",
  },
});
