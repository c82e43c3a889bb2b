import { expect, test } from "@playwright/test";

// Notifications: the server posts signed webhooks to end2end/support/receiver.mjs (and fails to
// reach an "unreachable-slack" target on purpose); admins see both on the Audit page's
// Notifications tab.

const receiver = `http://127.0.0.1:${process.env.TIDEMARK_E2E_RECEIVER_PORT ?? 3192}`;

test("a signed notification links to its timeline entry; admins see deliveries and failures", async ({ page, request }) => {
  test.setTimeout(60_000);
  let got: any[] = [];
  await expect
    .poll(
      async () => {
        got = await (await request.get(`${receiver}/received`)).json();
        return got.filter((r) => r.body?.trigger === "approval_requested").length;
      },
      { timeout: 30_000 },
    )
    .toBeGreaterThan(0);
  expect(got.every((r) => r.signed)).toBe(true);
  const asked = got.find((r) => r.body.trigger === "approval_requested").body;
  expect(asked.idempotency_key).toMatch(/^[0-9a-f-]{36}$/);

  // The message's link opens the application's timeline at that entry.
  const link = new URL(asked.url);
  expect(link.origin).toBe("http://127.0.0.1:3100");
  await page.goto(link.pathname + link.search + link.hash);
  await expect(page.locator(link.hash)).toBeVisible();
  await expect(page.locator(link.hash)).toContainText("Sync requested");

  // The Notifications tab: targets with their subscriptions, deliveries, and the failing target.
  await page.goto("/audit");
  await page.locator("a.admin-link").click();
  await expect(page).toHaveURL(/\/audit\?view=notifications$/);
  await expect(page.getByRole("link", { name: "Notifications" }).last()).toHaveAttribute("aria-current", "page");
  await expect(page.getByTestId("targets")).toContainText("receiver");
  await expect(page.getByTestId("targets")).toContainText("project shop · approval_requested, sync_failed");
  const table = page.getByTestId("deliveries");
  await expect(table.locator('tr[data-status="delivered"]').first()).toBeVisible();
  await expect(async () => {
    await page.reload();
    await expect(table.locator("tr", { hasText: "connection failed" }).first()).toBeVisible({ timeout: 1_000 });
  }).toPass({ timeout: 20_000 });
  expect(await page.content()).not.toContain("B000/XXXX"); // a Slack URL is a credential
  await page.screenshot({ path: "../docs/notifications.png", fullPage: true });

  await page.getByRole("link", { name: "Not delivered" }).click();
  await expect(page).toHaveURL(/view=notifications&show=undelivered/);
  await expect(table.locator("tr", { hasText: "unreachable-slack" }).first()).toBeVisible();
  await expect(table.locator('tr[data-status="delivered"]')).toHaveCount(0);
});

test("the Notifications tab and its API are for admins only", async ({ browser }) => {
  const context = await browser.newContext({ storageState: { cookies: [], origins: [] } });
  const page = await context.newPage();
  await page.goto("/login");
  await page.getByLabel("User name").fill("deployer1");
  await page.getByLabel("Password").fill("deployer1-password");
  await page.getByRole("button", { name: "Sign in", exact: true }).click();
  await expect(page).toHaveURL(/\/applications$/);
  await expect(page.locator("a.admin-link")).toBeHidden();
  await page.goto("/audit?view=notifications");
  await expect(page.getByRole("alert")).toContainText("needs the admin role");
  await expect(page.getByTestId("deliveries")).toHaveCount(0);
  const api = await page.request.get("/api/v1/notifications/deliveries");
  expect(api.status()).toBe(403);
  await context.close();
});
