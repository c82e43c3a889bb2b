import { AxeBuilder } from "@axe-core/playwright";
import { execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { expect, Page, test } from "@playwright/test";

// What the browser really downloads and sees: bytes on the wire (compressed, cached, hashed
// assets), the folded timeline, relative times that keep up, the compact switch, keyboard
// shortcuts, and axe-core on every page in light and dark.

const repo = "artifacts/repo";
const worktree = "artifacts/payments-wt";

function git(dir: string, ...args: string[]) {
  return execFileSync("git", ["-C", dir, "-c", "user.name=Dev Person", "-c", "user.email=dev@example.com", "-c", "commit.gpgsign=false", ...args], {
    encoding: "utf8",
  }).trim();
}

async function hydrated(page: Page) {
  await expect(page.locator("body")).toHaveAttribute("data-hydrated", "true");
}

/** Bytes received on the wire (headers + encoded bodies) while `run` runs, by Chromium's count. */
async function wireBytes(page: Page, run: () => Promise<void>) {
  const cdp = await page.context().newCDPSession(page);
  await cdp.send("Network.enable");
  let total = 0;
  const byUrl: Record<string, number> = {};
  const urls: Record<string, string> = {};
  cdp.on("Network.requestWillBeSent", (e: any) => (urls[e.requestId] = e.request.url));
  cdp.on("Network.loadingFinished", (e: any) => {
    total += e.encodedDataLength;
    const url = new URL(urls[e.requestId] ?? "http://x/?").pathname;
    byUrl[url] = (byUrl[url] ?? 0) + e.encodedDataLength;
  });
  await run();
  await cdp.detach();
  return { total, byUrl };
}

test("first visit ≤ 450 KB on the wire, the next page ≤ 60 KB; the WASM is sent compressed and cached", async ({ browser }) => {
  const context = await browser.newContext({ storageState: "artifacts/admin.json" });
  const page = await context.newPage();
  const wasm = page.waitForResponse((r) => r.url().endsWith(".wasm"));
  const first = await wireBytes(page, async () => {
    await page.goto("/applications");
    await hydrated(page);
    await page.waitForLoadState("networkidle");
  });
  const w = await wasm;
  expect(w.url()).toMatch(/\/pkg\/tidemark\.[A-Za-z0-9_-]+\.wasm$/);
  expect(w.headers()["content-encoding"]).toBe("br");
  expect(w.headers()["cache-control"]).toBe("public, max-age=31536000, immutable");
  console.log(`first visit: ${first.total} bytes on the wire`, JSON.stringify(first.byUrl));
  expect(first.total).toBeLessThanOrEqual(450_000);

  // A second page, loaded in full in the same session: the assets come from the cache.
  const second = await wireBytes(page, async () => {
    await page.goto("/approvals");
    await hydrated(page);
    await page.waitForLoadState("networkidle");
  });
  console.log(`second page: ${second.total} bytes on the wire`, JSON.stringify(second.byUrl));
  expect(second.total).toBeLessThanOrEqual(60_000);
  await context.close();
});

test("a run of superseded requests folds into one card; an approved request holds its sync and health", async ({ page }) => {
  test.setTimeout(120_000);
  git(repo, "worktree", "add", "-q", "--force", "../payments-wt", "release-1.4");
  await page.goto("/applications/payments");
  for (const currency of ["USD", "GBP", "CHF"]) {
    writeFileSync(`${worktree}/apps/payments/app.yaml`, `apiVersion: v1\nkind: Namespace\nmetadata: {name: payments}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: payments}\ndata: {currency: ${currency}}\n`);
    git(worktree, "commit", "-qam", `payments: ${currency}`);
    const sha = git(worktree, "rev-parse", "HEAD");
    // Each new revision gets its request (superseding the one before) before the next commit.
    await expect(async () => {
      await page.reload();
      await expect(page.locator("section.request")).toContainText(sha.slice(0, 7), { timeout: 1_000 });
    }).toPass({ timeout: 30_000 });
  }
  const run = page.locator('[data-kind="superseded_run"]');
  await expect(run).toContainText("sync requests superseded");
  await run.getByText(/Show the \d+ requests/).click();
  await expect(run.locator('[data-kind="sync_requested"]').first()).toBeVisible();

  // Approve the open request (one approval): it syncs; its card holds approval, sync, health.
  await hydrated(page);
  await page.locator("section.request").getByTestId("approve").click();
  await expect(async () => {
    await page.reload();
    const card = page.locator('li[data-kind="sync_requested"]').first();
    await expect(card.locator(":scope > .body > details.fold > summary")).toContainText("Sync", { timeout: 1_000 });
  }).toPass({ timeout: 30_000 });
  const card = page.locator('li[data-kind="sync_requested"]').first();
  await card.locator(":scope > .body > details.fold > summary").click();
  await expect(card.locator('[data-kind="approval"]')).toBeVisible();
  await expect(card.locator('[data-kind="sync"]')).toBeVisible();
  await page.screenshot({ path: "../docs/timeline-folded.png", fullPage: true });
});

test("relative times keep up, the compact switch is remembered, jump to date pages back", async ({ page }) => {
  await page.clock.install();
  await page.goto("/applications/payments");
  await hydrated(page);
  const newest = page.locator(".timeline time[data-rel]").first();
  const before = await newest.innerText();
  await page.clock.fastForward("03:00:00");
  await expect(newest).not.toHaveText(before);
  await expect(newest).toContainText(/\d+ h ago/);

  const toggle = page.locator('[data-action="density"]');
  await expect(toggle).toHaveAttribute("aria-pressed", "false");
  await toggle.click();
  await expect(page.locator("html")).toHaveAttribute("data-density", "compact");
  await page.reload();
  await expect(page.locator("html")).toHaveAttribute("data-density", "compact");
  await expect(page.locator('[data-action="density"]')).toHaveAttribute("aria-pressed", "true");
  await page.screenshot({ path: "artifacts/timeline-compact.png", fullPage: true });
  await page.locator('[data-action="density"]').click();
  await expect(page.locator("html")).toHaveAttribute("data-density", "comfortable");

  await page.getByLabel("Jump to date").fill("2020-01-01");
  await page.getByRole("button", { name: "Go" }).click();
  await expect(page).toHaveURL(/date=2020-01-01/);
  await expect(page.getByRole("heading", { name: "Nothing here yet" })).toBeVisible();
});

test("keyboard: / searches, ? lists the shortcuts, g a / g p / g u go places", async ({ page }) => {
  await page.goto("/applications");
  await hydrated(page);
  await page.keyboard.press("/");
  await expect(page.getByLabel("Search")).toBeFocused();
  await page.keyboard.press("Escape");
  await page.locator("h1").click();
  await page.keyboard.press("?");
  await expect(page.getByRole("dialog", { name: "Keyboard shortcuts" })).toBeVisible();
  await page.keyboard.press("Escape");
  await expect(page.getByRole("dialog")).toBeHidden();
  await page.keyboard.press("g");
  await page.keyboard.press("u");
  await expect(page).toHaveURL(/\/audit$/);
  await page.keyboard.press("g");
  await page.keyboard.press("p");
  await expect(page).toHaveURL(/\/approvals$/);
  await page.keyboard.press("g");
  await page.keyboard.press("a");
  await expect(page).toHaveURL(/\/applications$/);
});

for (const scheme of ["light", "dark"] as const) {
  test(`axe-core: no serious or critical violations on any page (${scheme})`, async ({ page, browser }) => {
    test.setTimeout(90_000);
    await page.emulateMedia({ colorScheme: scheme });
    const pages = [
      "/applications",
      "/applications/guestbook",
      "/applications/guestbook?tab=resources",
      "/applications/guestbook?tab=diff",
      "/applications/guestbook?dialog=rollback",
      "/approvals",
      "/audit",
      "/audit?view=notifications",
      "/no-such-page",
    ];
    const found: string[] = [];
    const check = async (p: Page, path: string) => {
      const results = await new AxeBuilder({ page: p }).analyze();
      for (const v of results.violations) {
        if (v.impact === "serious" || v.impact === "critical") {
          found.push(`${path}: ${v.id} (${v.impact}) ${v.nodes.map((n) => n.target.join(" ")).slice(0, 3).join(", ")}`);
        }
      }
    };
    for (const path of pages) {
      await page.goto(path);
      await hydrated(page);
      await check(page, path);
    }
    // Signed out: the sign-in page.
    const context = await browser.newContext({ storageState: { cookies: [], origins: [] }, colorScheme: scheme });
    const signedOut = await context.newPage();
    await signedOut.goto("/login");
    await check(signedOut, "/login");
    await context.close();
    expect(found, found.join("\n")).toEqual([]);
  });
}
