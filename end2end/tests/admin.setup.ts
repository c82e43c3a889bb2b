import { expect, test as setup } from "@playwright/test";

// Signs in once as the bootstrap admin through the local form; the suite reuses the session.
setup("sign in as the bootstrap admin", async ({ page }) => {
  await page.goto("/login");
  await page.getByLabel("User name").fill("admin");
  await page.getByLabel("Password").fill("e2e-admin-password");
  await page.getByRole("button", { name: "Sign in", exact: true }).click();
  await expect(page).toHaveURL(/\/applications$/);
  await expect(page.locator("#whoami")).toHaveText("Administrator");
  await page.context().storageState({ path: "artifacts/admin.json" });
});
