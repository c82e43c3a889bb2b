import { execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { expect, Page, test } from "@playwright/test";

// Verified commit signatures: application `ledger` (project ledger, require_signed) follows
// branch `signed`, whose first commit env.sh signed with an SSH key the project trusts. An
// unsigned commit on top is held back: the page says why, the signed revision stays deployed.

const repo = "artifacts/repo";
const worktree = "artifacts/ledger-wt";
const receiver = `http://127.0.0.1:${process.env.TIDEMARK_E2E_RECEIVER_PORT ?? 3192}`;

function git(dir: string, ...args: string[]) {
  return execFileSync("git", ["-C", dir, "-c", "user.name=Dev Person", "-c", "user.email=dev@example.com", "-c", "commit.gpgsign=false", ...args], {
    encoding: "utf8",
  }).trim();
}

async function eventually(page: Page, check: () => Promise<void>) {
  await expect(async () => {
    await page.reload();
    await check();
  }).toPass({ timeout: 30_000 });
}

test("a signed revision deploys with its signer; an unsigned one is held back and says why", async ({ page, request }) => {
  test.setTimeout(90_000);
  const signed = git(repo, "rev-parse", "signed");
  await page.goto("/applications/ledger");
  await expect(page.getByTestId("policy")).toContainText("signed commits only");
  await eventually(page, async () => {
    await expect(page.locator(".app-head [data-sync]")).toHaveText(/Synced/, { timeout: 1_000 });
  });
  const first = page.locator('[data-kind="commit"]', { hasText: "ledger: first release" });
  await expect(first.locator('[data-signature="verified"]')).toContainText("release-signer@example.com");
  await expect(page.locator(".app-head .facts")).toContainText(signed.slice(0, 7));
  await page.screenshot({ path: "artifacts/signatures-verified.png", fullPage: true });

  // Someone pushes an unsigned change to the branch.
  git(repo, "worktree", "add", "-q", "--force", "../ledger-wt", "signed");
  writeFileSync(`${worktree}/apps/ledger/app.yaml`, "apiVersion: v1\nkind: Namespace\nmetadata: {name: ledger}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: ledger}\ndata: {release: \"2\"}\n");
  git(worktree, "commit", "-qam", "ledger: release 2 (unsigned)");
  const unsigned = git(worktree, "rev-parse", "HEAD");

  await eventually(page, async () => {
    await expect(page.getByTestId("held-back")).toContainText(`revision ${unsigned.slice(0, 7)} of ledger is not deployed: unsigned`, { timeout: 1_000 });
  });
  // The reconciler holds it back (a timeline entry), after its next compare.
  await eventually(page, async () => {
    await expect(page.locator('[data-kind="revision_blocked"]').first()).toContainText("Not deployed: unverified", { timeout: 1_000 });
  });
  await expect(page.locator('[data-kind="commit"]', { hasText: "release 2" }).locator('[data-signature="unsigned"]')).toBeVisible();
  // The signed revision is what runs.
  const deployed = page.locator(".facts div", { hasText: "Deployed" });
  await expect(deployed).toContainText(signed.slice(0, 7));
  await page.screenshot({ path: "../docs/signatures.png", fullPage: true });

  // The REST API says the same, and people were told.
  const detail = await (await page.request.get("/api/v1/applications/ledger")).json();
  expect(detail.require_signed).toBe(true);
  expect(detail.target_signature.status).toBe("unsigned");
  await expect
    .poll(async () => {
      const got: any[] = await (await request.get(`${receiver}/received`)).json();
      return got.filter((r) => r.body?.trigger === "revision_blocked" && r.body?.application === "ledger").length;
    }, { timeout: 30_000 })
    .toBeGreaterThan(0);
});
