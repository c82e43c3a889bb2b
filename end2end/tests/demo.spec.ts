import { execFileSync, execSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { Browser, expect, Page, test } from "@playwright/test";

// The README's "Try it in five minutes", step by step, against `tidemark demo` (what `make run`
// starts). Its screenshots are the README's (docs/demo-*.png).

const base = `http://127.0.0.1:${process.env.TIDEMARK_E2E_DEMO_PORT ?? 3400}`;
const sandbox = `http://127.0.0.1:${process.env.TIDEMARK_E2E_DEMO_SANDBOX_PORT ?? 6743}`;
const dir = "artifacts/demo";
const shot = (name: string) => `../docs/demo-${name}.png`;

test.use({ baseURL: base, storageState: { cookies: [], origins: [] } });

function password(user: "admin" | "deployer1" | "deployer2"): string {
  return JSON.parse(readFileSync(`${dir}/credentials.json`, "utf8"))[user];
}

async function signIn(page: Page, user: "admin" | "deployer1" | "deployer2") {
  await page.goto("/login");
  await page.getByLabel("User name").fill(user);
  await page.getByLabel("Password").fill(password(user));
  await page.getByRole("button", { name: "Sign in", exact: true }).click();
  await expect(page).toHaveURL(/\/applications$/);
}

async function newUser(browser: Browser, user: "deployer1" | "deployer2"): Promise<Page> {
  const context = await browser.newContext({ baseURL: base, storageState: { cookies: [], origins: [] } });
  const page = await context.newPage();
  await signIn(page, user);
  return page;
}

test.describe.serial("the README walkthrough on the demo", () => {
  test.setTimeout(180_000);

  test("1. the demo's story has played: eight applications, guestbook degraded", async ({ page }) => {
    // The demo writes this file when its story has played.
    await expect.poll(() => existsSync(`${dir}/story-done`), { timeout: 150_000 }).toBe(true);
    await signIn(page, "admin");
    const guestbook = page.locator('tr[data-app="guestbook"]');
    await expect(async () => {
      await page.goto("/applications");
      await expect(guestbook.locator("[data-health]")).toHaveText(/Degraded/, { timeout: 1_000 });
      await expect(page.locator('tr[data-app="frontend"] [data-health]')).toHaveText(/Healthy/, { timeout: 1_000 });
    }).toPass({ timeout: 150_000 });
    // Four from tidemark.toml, the app of apps `platform`, and three it and the generator declared.
    await expect(page.locator("tbody tr")).toHaveCount(8);
    await expect(page.locator('tr[data-app="shop"] [data-health]')).toHaveText(/Healthy/);
    await expect(guestbook).toContainText("Deployer");
    await expect(page.locator('tr[data-app="podinfo"] [data-testid="pending"]')).toContainText("0 of 1");
    await page.screenshot({ path: shot("applications"), fullPage: true });
  });

  test("2. guestbook's timeline, then a rollback to the known-good revision", async ({ page }) => {
    await signIn(page, "admin");
    await page.goto("/applications/guestbook");
    await expect(page.locator("body")).toHaveAttribute("data-hydrated", "true");
    const timeline = page.getByTestId("timeline");
    await expect(timeline).toContainText("Deployer One approved");
    await expect(timeline).toContainText("Deployer Two approved");
    await expect(timeline).toContainText("guestbook: try the new frontend build");
    await page.getByTestId("rollback-open").click();
    const dialog = page.getByTestId("rollback-dialog");
    await dialog.locator("[data-revision] a").first().click();
    await expect(dialog.getByTestId("diff")).toContainText("broken");
    await dialog.getByLabel("Reason (recorded in the audit ledger)").fill("the new frontend build crashes");
    await page.screenshot({ path: shot("rollback"), fullPage: true });
    await dialog.getByTestId("rollback-confirm").click();
    await expect(page.getByTestId("pinned-banner")).toContainText("the new frontend build crashes");
    await expect(page.locator("[data-health]").first()).toHaveText(/Healthy/, { timeout: 30_000 });
  });

  test("3. a kubectl edit shows up as drift on guestbook", async ({ page }) => {
    await signIn(page, "admin");
    await page.goto("/applications/guestbook?tab=diff");
    await expect(page.locator("body")).toHaveAttribute("data-hydrated", "true");
    execFileSync("kubectl", [`--server=${sandbox}`, "-n", "guestbook", "scale", "deployment", "frontend", "--replicas=5"]);
    await expect(page.getByTestId("drift-badge")).toBeVisible({ timeout: 30_000 });
    await page.reload();
    await expect(page.getByTestId("diff")).toContainText(".spec.replicas");
    await page.screenshot({ path: shot("drift"), fullPage: true });
  });

  test("4. a new revision appears on the timeline without a reload", async ({ page }) => {
    await signIn(page, "admin");
    await page.goto("/applications/guestbook");
    await expect(page.locator("body")).toHaveAttribute("data-hydrated", "true");
    // The command the demo prints.
    execSync(
      `sed -i 's/replicas: 3/replicas: 4/' ${dir}/repo/apps/guestbook/app.yaml && git -C ${dir}/repo -c user.name=You -c user.email=you@example.com commit -qam "guestbook: four replicas"`,
    );
    await expect(page.locator('[data-kind="commit"]', { hasText: "guestbook: four replicas" })).toBeVisible({ timeout: 30_000 });
  });

  test("5. unpin, then two deployers approve the new target", async ({ page, browser }) => {
    await signIn(page, "admin");
    await page.goto("/applications/guestbook");
    await expect(page.locator("body")).toHaveAttribute("data-hydrated", "true");
    await page.getByTestId("unpin").click();
    await expect(page.getByTestId("pinned-banner")).toHaveCount(0);

    const one = await newUser(browser, "deployer1");
    const request = one.locator("section.request", { has: one.locator('a[href="/applications/guestbook"]') });
    await expect(async () => {
      await one.goto("/approvals");
      await expect(request).toContainText("guestbook: four replicas", { timeout: 1_000 });
    }).toPass({ timeout: 60_000 });
    await expect(one.locator("body")).toHaveAttribute("data-hydrated", "true");
    await request.getByRole("button", { name: "Approve" }).click();
    await expect(one.locator(".flash")).toContainText("1 of 2");
    await one.screenshot({ path: shot("approvals"), fullPage: true });

    const two = await newUser(browser, "deployer2");
    await two.goto("/approvals");
    const second = two.locator("section.request", { has: two.locator('a[href="/applications/guestbook"]') });
    await second.getByRole("button", { name: "Approve" }).click();
    await expect(two.locator(".flash")).toContainText("synced");
  });

  test("5b. the Helm chart application: its timeline, a diff between chart renders and a rollback", async ({ page }) => {
    await signIn(page, "admin");
    await page.goto("/applications/shop");
    await expect(page.locator("body")).toHaveAttribute("data-hydrated", "true");
    await expect(page.locator(".app-head .facts")).toContainText("demo / charts/shop · Helm chart, values from ../../envs/demo/shop.yaml");
    const timeline = page.getByTestId("timeline");
    await expect(timeline).toContainText("shop: nginx 1.27.4, new banner");
    await expect(timeline).toContainText("shop: three replicas for the sale");
    await page.screenshot({ path: shot("helm-timeline"), fullPage: true });
    // The earlier render: what rolling back changes (rendered by helm template, stored).
    await page.getByTestId("rollback-open").click();
    const dialog = page.getByTestId("rollback-dialog");
    await dialog.locator("[data-revision] a", { hasText: "shop: three replicas for the sale" }).click();
    const diff = dialog.getByTestId("diff");
    await expect(diff).toContainText("nginx:1.27.4");
    await expect(diff).toContainText("nginx:1.27.3");
    await expect(diff).toContainText("Winter sale: last days");
    await dialog.getByLabel("Reason (recorded in the audit ledger)").fill("1.27.4 breaks checkout");
    await page.screenshot({ path: shot("helm-rollback"), fullPage: true });
    await dialog.getByTestId("rollback-confirm").click();
    await expect(page.getByTestId("pinned-banner")).toContainText("1.27.4 breaks checkout");
    await expect
      .poll(
        () =>
          execFileSync("kubectl", [`--server=${sandbox}`, "-n", "shop", "get", "deployment", "shop-web", "-o", "jsonpath={.spec.template.spec.containers[0].image}"], {
            encoding: "utf8",
          }),
        { timeout: 30_000 },
      )
      .toBe("nginx:1.27.3");
  });

  test("6. the audit ledger lists all of it", async ({ page }) => {
    await signIn(page, "admin");
    await page.goto("/audit?application=guestbook");
    const actions = new Set(await page.locator("table.audit tbody .badge").allTextContents());
    for (const action of ["approve", "sync", "rollback", "unpin"]) {
      expect(actions, `audit actions ${[...actions]}`).toContain(action);
    }
    await expect(page.locator("#chain-status")).toContainText("verified");
  });

  test("6b. applications declared in Git: the root's timeline says what it declared and refused", async ({ page }) => {
    await signIn(page, "admin");
    await page.goto("/applications/blog");
    await expect(page.locator("body")).toHaveAttribute("data-hydrated", "true");
    await expect(page.locator("main")).toContainText("declared in Git by generator/teams");
    await expect(page.locator('[data-health]').first()).toHaveText(/Healthy/, { timeout: 30_000 });
    await page.goto("/applications/platform?tab=timeline");
    await expect(page.locator("body")).toHaveAttribute("data-hydrated", "true");
    const timeline = page.getByTestId("timeline");
    await expect(timeline).toContainText("Declared in Git");
    await expect(timeline).toContainText("created at");
    await expect(timeline).toContainText("docs");
    await expect(timeline).toContainText("Definition refused");
    await expect(timeline).toContainText("kube-system");
    await page.screenshot({ path: shot("declared"), fullPage: true });
  });

  test("7. each step was also sent as a signed notification", async ({ page }) => {
    await signIn(page, "admin");
    await page.goto("/audit?view=notifications");
    await expect(page.getByTestId("targets")).toContainText("demo-inbox");
    const table = page.getByTestId("deliveries");
    for (const trigger of ["rollback_performed", "drift_opened", "approval_requested", "sync_succeeded", "health_degraded"]) {
      await expect(async () => {
        await page.reload();
        await expect(table.locator('tr[data-status="delivered"]', { hasText: trigger }).first()).toBeVisible({ timeout: 1_000 });
      }).toPass({ timeout: 15_000 });
    }
    await page.screenshot({ path: shot("notifications"), fullPage: true });
    const received = readFileSync(`${dir}/notifications.jsonl`, "utf8")
      .trim()
      .split("\n")
      .map((line) => JSON.parse(line));
    expect(received.length).toBeGreaterThan(5);
    expect(received.every((r) => r.signature_ok)).toBe(true);
    const rollback = received.find((r) => r.payload.trigger === "rollback_performed").payload;
    expect(rollback.url).toMatch(/^http:\/\/127\.0\.0\.1:3400\/applications\/guestbook\?tab=timeline#e\d+$/);
  });
});
