import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { Browser, expect, Page, test } from "@playwright/test";

// The operator's day, in order: Git moves and the timeline shows it live; two deployers approve
// an N=2 request; a hand edit in the cluster shows up as drift; a rollback pins the
// application; unpin; the audit ledger holds all of it. The world (a Git repository made with
// the git CLI and the sandbox cluster) comes from end2end/support/env.sh.

const repo = "artifacts/repo";
const sandbox = `http://127.0.0.1:${process.env.TIDEMARK_E2E_SANDBOX_PORT ?? 3644}`;

function git(...args: string[]) {
  return execFileSync("git", ["-C", repo, "-c", "user.name=Dev Person", "-c", "user.email=dev@example.com", ...args], {
    encoding: "utf8",
  });
}

async function signIn(browser: Browser, user: string): Promise<Page> {
  const context = await browser.newContext({ storageState: { cookies: [], origins: [] } });
  const page = await context.newPage();
  await page.goto("/login");
  await page.getByLabel("User name").fill(user);
  await page.getByLabel("Password").fill(`${user}-password`);
  await page.getByRole("button", { name: "Sign in", exact: true }).click();
  await expect(page).toHaveURL(/\/applications$/);
  return page;
}

async function hydrated(page: Page) {
  await expect(page.locator("body")).toHaveAttribute("data-hydrated", "true");
}

test.describe.serial("operator workflow", () => {
  test.setTimeout(90_000);

  test("a commit pushed with git appears on the timeline without a reload", async ({ page }) => {
    await page.goto("/applications/guestbook");
    await hydrated(page);
    await expect(page.getByTestId("timeline")).toContainText("guestbook: nginx 1.26");
    await page.evaluate(() => ((window as any).__kept = true));

    const file = `${repo}/apps/guestbook/app.yaml`;
    writeFileSync(file, readFileSync(file, "utf8").replace("replicas: 2", "replicas: 3"));
    git("commit", "-qam", "guestbook: three replicas");

    const entry = page.locator('[data-kind="commit"]', { hasText: "guestbook: three replicas" });
    await expect(entry).toBeVisible({ timeout: 20_000 });
    expect(await page.evaluate(() => (window as any).__kept)).toBe(true);
    // The open request follows the new revision.
    await expect(page.locator("section.request")).toContainText("guestbook: three replicas", { timeout: 20_000 });
    await page.screenshot({ path: "artifacts/application-timeline.png", fullPage: true });
    // Works from 1,024 px wide: nothing scrolls sideways.
    await page.setViewportSize({ width: 1024, height: 768 });
    expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(1024);
    // Keyboard: the tabs are links that work with Enter.
    await page.getByRole("link", { name: "Resources" }).focus();
    await page.keyboard.press("Enter");
    await expect(page).toHaveURL(/tab=resources/);
  });

  test("two deployers approve an N=2 request and the sync runs", async ({ browser }) => {
    const first = await signIn(browser, "deployer1");
    await first.goto("/applications/guestbook");
    await hydrated(first);
    const panel = first.locator("section.request");
    await expect(panel).toContainText("0 of 2 approvals");
    await expect(panel).toContainText("guestbook: three replicas");
    await panel.getByRole("button", { name: "Approve" }).click();
    await expect(first.locator(".flash")).toContainText("1 of 2");
    await expect(first.locator("section.request")).toContainText("you already approved");

    const second = await signIn(browser, "deployer2");
    await second.goto("/approvals");
    await hydrated(second);
    const request = second.locator("section.request", { has: second.locator('a[href="/applications/guestbook"]') });
    await expect(request).toContainText("Approved by: Deployer 1");
    await second.screenshot({ path: "artifacts/approvals.png", fullPage: true });
    await request.getByRole("button", { name: "Approve" }).click();
    await expect(second.locator(".flash")).toContainText("synced");
    await expect(second.locator("section.request", { has: second.locator('a[href="/applications/guestbook"]') })).toHaveCount(0);

    // Deployer 1's page learns of the sync by itself.
    await expect(first.locator('[data-kind="sync"]').first()).toContainText("succeeded", { timeout: 20_000 });
    await expect(first.locator("section.request")).toHaveCount(0);
    await first.context().close();
    await second.context().close();
  });

  test("a kubectl edit of a live object shows up as drift, with its diff", async ({ page }) => {
    await page.goto("/applications/guestbook");
    await hydrated(page);
    await expect(page.locator("[data-health]").first()).toHaveText(/Healthy/, { timeout: 20_000 });
    execFileSync("kubectl", [
      `--server=${sandbox}`,
      "-n",
      "guestbook",
      "patch",
      "deployment",
      "web",
      "--type=merge",
      "-p",
      '{"spec":{"replicas":5}}',
    ]);
    await expect(page.getByTestId("drift-badge")).toBeVisible({ timeout: 20_000 });
    await expect(page.locator('[data-kind="drift_opened"]').first()).toBeVisible();
    await page.goto("/applications");
    await expect(page.locator('tr[data-app="guestbook"] [data-testid="drift"]')).toBeVisible();
    await page.goto("/applications/guestbook");

    await page.getByRole("link", { name: "Resources" }).click();
    await expect(page.locator('[data-resource="Deployment/guestbook/web"]')).toContainText("OutOfSync");
    await page.screenshot({ path: "artifacts/application-resources.png", fullPage: true });
    await page.locator('[data-resource="Deployment/guestbook/web"]').getByRole("link").click();
    const diff = page.getByTestId("diff");
    await expect(diff).toContainText(".spec.replicas");
    await expect(diff.locator(".del")).toContainText("5");
    await expect(diff.locator(".ins")).toContainText("3");
    await expect(diff).not.toContainText("e2e-secret-value");
    await page.screenshot({ path: "artifacts/application-diff.png", fullPage: true });
    await page.getByRole("link", { name: "Side by side" }).click();
    await expect(page.locator("table.split")).toContainText(".spec.replicas");
    await page.screenshot({ path: "artifacts/application-diff-split.png", fullPage: true });
  });

  test("rollback with a reason pins the application, and unpin releases it", async ({ page }) => {
    await page.goto("/applications/guestbook");
    await hydrated(page);
    await page.getByTestId("rollback-open").click();
    const dialog = page.getByTestId("rollback-dialog");
    await expect(dialog).toBeVisible();
    await dialog.locator("[data-revision] a").first().click();
    await expect(dialog.getByText("running now")).toBeVisible();
    await dialog.getByLabel("Reason (recorded in the audit ledger)").fill("e2e: hold this release");
    await page.screenshot({ path: "artifacts/rollback-dialog.png", fullPage: true });
    await dialog.getByTestId("rollback-confirm").click();

    await expect(page).toHaveURL(/\/applications\/guestbook$/);
    await expect(page.locator(".flash")).toContainText("Rolled back to");
    const banner = page.getByTestId("pinned-banner");
    await expect(banner).toContainText("e2e: hold this release");
    await expect(page.getByTestId("drift-badge")).toHaveCount(0, { timeout: 20_000 });
    await page.screenshot({ path: "artifacts/application-pinned.png", fullPage: true });

    await banner.getByRole("button", { name: "Unpin" }).click();
    await expect(page.locator(".flash")).toContainText("unpinned");
    await expect(page.getByTestId("pinned-banner")).toHaveCount(0);
  });

  test("the audit page lists every step", async ({ page }) => {
    await page.goto("/audit?application=guestbook");
    await hydrated(page);
    const actions = new Set(await page.locator("table.audit tbody .badge").allTextContents());
    for (const action of ["approve", "sync", "rollback", "unpin"]) {
      expect(actions, `audit actions ${[...actions]}`).toContain(action);
    }
    await expect(page.locator("table.audit")).toContainText("Deployer 1");
    await expect(page.locator("table.audit")).toContainText("Deployer 2");
    await expect(page.locator("#chain-status")).toContainText("verified");
    await page.screenshot({ path: "artifacts/audit-workflow.png", fullPage: true });
  });
});
