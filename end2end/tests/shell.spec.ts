import { expect, test } from "@playwright/test";

// The app shell is served by SSR and then hydrated: interactions run in the browser.

test("the Applications page hydrates, filters on the server and keeps the router in charge", async ({ page }) => {
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(e.message));
  page.on("console", (m) => m.type() === "error" && errors.push(m.text()));

  await page.goto("/applications");
  await expect(page.getByRole("heading", { name: "Applications" })).toBeVisible();
  await expect(page.getByTestId("app-count")).toHaveText("4 applications match · showing 4");
  await expect(page.locator("body")).toHaveAttribute("data-hydrated", "true");

  // The filter form is handled by the router after hydration: new rows, no document load.
  await page.evaluate(() => ((window as any).__kept = true));
  await page.getByLabel("Search").fill("demo pod");
  await page.getByLabel("Search").press("Enter");
  await expect(page).toHaveURL(/q=demo\+pod/);
  await expect(page.getByTestId("app-count")).toHaveText("1 application matches · showing 1");
  await expect(page.locator("tbody tr")).toHaveCount(1);
  await expect(page.locator("tbody tr")).toContainText("podinfo");
  expect(await page.evaluate(() => (window as any).__kept)).toBe(true);

  await page.getByLabel("Sync status").selectOption("Synced");
  await page.getByLabel("Search").fill("");
  await page.getByRole("button", { name: "Filter" }).click();
  await expect(page).toHaveURL(/status=Synced/);
  await page.getByRole("link", { name: "Clear" }).click();
  await expect(page.locator("tbody tr")).toHaveCount(4);
  await page.screenshot({ path: "artifacts/applications.png", fullPage: true });
  expect(errors).toEqual([]);
});

test("navigation reaches every section client-side", async ({ page }) => {
  await page.goto("/applications");
  await expect(page.locator("body")).toHaveAttribute("data-hydrated", "true");
  const nav = page.getByRole("navigation", { name: "Primary" });

  await nav.getByRole("link", { name: "Approvals" }).click();
  await expect(page).toHaveURL(/\/approvals$/);
  await expect(page.getByRole("heading", { level: 1 })).toHaveText("Approvals");
  await expect(nav.getByRole("link", { name: "Approvals" })).toHaveAttribute("aria-current", "page");

  await nav.getByRole("link", { name: "Audit" }).click();
  await expect(page.getByRole("heading", { level: 1 })).toHaveText("Audit");
  await expect(page).toHaveTitle("Audit · Tidemark");
});

test("without JavaScript the filter still works through the query string", async ({ browser }) => {
  const context = await browser.newContext({ javaScriptEnabled: false, storageState: "artifacts/admin.json" });
  const page = await context.newPage();
  await page.goto("/applications");
  await page.getByLabel("Search").fill("shop");
  await page.getByLabel("Search").press("Enter");
  await expect(page).toHaveURL(/\?q=shop/);
  await expect(page.getByTestId("app-count")).toHaveText("1 application matches · showing 1");
  await expect(page.locator("tbody tr")).toContainText("payments");
  await context.close();
});

test("pages read well in the dark colour scheme", async ({ browser }) => {
  const context = await browser.newContext({ colorScheme: "dark", storageState: "artifacts/admin.json" });
  const page = await context.newPage();
  await page.goto("/approvals");
  await expect(page.getByRole("heading", { level: 1 })).toHaveText("Approvals");
  const background = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
  expect(background).toBe("rgb(15, 20, 25)");
  await page.screenshot({ path: "artifacts/approvals-dark.png", fullPage: true });
  await context.close();
});

test("the Audit page shows the ledger with its chain status, filters and exports", async ({ page }) => {
  await page.goto("/audit");
  await expect(page.locator("body")).toHaveAttribute("data-hydrated", "true");
  await expect(page.locator("#chain-status")).toContainText("Hash chain verified through #");
  await expect(page.locator("table.audit")).toContainText("sign_in");
  await page.getByLabel("Action").fill("sign_in");
  await page.getByRole("button", { name: "Filter" }).click();
  await expect(page).toHaveURL(/action=sign_in/);
  const actions = await page.locator("table.audit tbody .badge").allTextContents();
  expect(actions.length).toBeGreaterThan(0);
  expect(new Set(actions)).toEqual(new Set(["sign_in"]));
  await expect(page.getByRole("link", { name: "CSV" })).toHaveAttribute("href", /format=csv.*action=sign_in/);
  await page.screenshot({ path: "artifacts/audit.png", fullPage: true });
});
