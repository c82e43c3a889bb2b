import { expect, test } from "@playwright/test";

// Sign-in as people meet it: the local form, single sign-on through a real OpenID provider
// (oidc-provider from npm), the 403 page, and sign-out (RP-initiated at the provider).
test.use({ storageState: { cookies: [], origins: [] } });

test("a visitor is sent to sign in, sees clear errors, and lands where they were going", async ({ page }) => {
  await page.goto("/approvals");
  await expect(page).toHaveURL(/\/login\?next=%2Fapprovals$/);
  await expect(page.getByRole("heading", { name: "Sign in to Tidemark" })).toBeVisible();
  await expect(page.getByRole("link", { name: "Sign in with Example SSO" })).toBeVisible();
  await page.screenshot({ path: "artifacts/sign-in.png", fullPage: true });

  await page.getByLabel("User name").fill("admin");
  await page.getByLabel("Password").fill("not the password");
  await page.getByRole("button", { name: "Sign in", exact: true }).click();
  await expect(page.getByRole("alert")).toHaveText("Wrong user name or password.");
  await page.screenshot({ path: "artifacts/sign-in-error.png", fullPage: true });

  await page.getByLabel("User name").fill("admin");
  await page.getByLabel("Password").fill("e2e-admin-password");
  await page.getByRole("button", { name: "Sign in", exact: true }).click();
  await expect(page).toHaveURL(/\/approvals$/);
  await expect(page.locator("#whoami")).toHaveText("Administrator");
  await expect(page.locator("#role")).toHaveText("admin");

  await page.getByRole("button", { name: "Sign out" }).click();
  await expect(page).toHaveURL(/\/login\?signed_out=1$/);
  await expect(page.getByRole("status")).toHaveText("You are signed out.");
  await page.goto("/applications");
  await expect(page).toHaveURL(/\/login/);
});

async function signInWithSso(page: import("@playwright/test").Page, login: string) {
  await page.goto("/login");
  await page.getByRole("link", { name: "Sign in with Example SSO" }).click();
  // The provider's own pages: login, then consent.
  await expect(page).toHaveURL(/127\.0\.0\.1:3190\/interaction\//);
  await page.locator('input[name="login"]').fill(login);
  await page.locator('input[name="password"]').fill("any");
  await page.getByRole("button", { name: "Sign-in" }).click();
  await page.getByRole("button", { name: "Continue" }).click();
}

test("single sign-on through a real OpenID provider maps the group to a role", async ({ page }) => {
  await signInWithSso(page, "grace");
  await expect(page).toHaveURL(/127\.0\.0\.1:3100\/applications$/);
  await expect(page.locator("#whoami")).toHaveText("Grace Hopper");
  await expect(page.locator("#role")).toHaveText("deployer");
  await expect(page.getByTestId("app-count")).toHaveText("4 applications match · showing 4");
  await page.screenshot({ path: "artifacts/signed-in-sso.png", fullPage: true });

  // Sign-out ends the session here and at the provider (which asks to confirm).
  await page.getByRole("button", { name: "Sign out" }).click();
  await expect(page).toHaveURL(/127\.0\.0\.1:3190\/session\/end/);
  await page.getByRole("button", { name: "Yes, sign me out" }).click();
  await expect(page).toHaveURL(/127\.0\.0\.1:3100\/login\?signed_out=1$/);
  await expect(page.getByRole("status")).toHaveText("You are signed out.");
});

test("a person without a role gets a 403 page that names the role needed", async ({ page }) => {
  await signInWithSso(page, "newcomer");
  await expect(page.getByRole("heading", { name: "Not allowed" })).toBeVisible();
  await expect(page.locator("#forbidden")).toContainText("Signed in as newcomer");
  await expect(page.locator("#forbidden")).toContainText("needs the viewer role; you have no role");
  await page.screenshot({ path: "artifacts/forbidden.png", fullPage: true });
  await page.getByRole("button", { name: "Sign out" }).click();
});

test("a failed single sign-on shows why and signs nobody in", async ({ page }) => {
  // A callback with no sign-in in progress (a replayed or forged link).
  await page.goto("/auth/oidc/callback?code=forged&state=forged");
  await expect(page).toHaveURL(/\/login\?error=stale$/);
  await expect(page.getByRole("alert")).toHaveText("This sign-in expired or was already used. Start again.");
  await expect(page.getByRole("link", { name: "Sign in", exact: true })).toBeVisible();
});
