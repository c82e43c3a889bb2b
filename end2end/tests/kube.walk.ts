import { execFileSync } from "node:child_process";
import { Browser, expect, Page, test } from "@playwright/test";

// The operator's walk on a real control plane (playwright.kube.config.ts): two deployers
// approve an N=2 request, the sync runs, the Deployment becomes Available through the real
// controllers and kwok nodes, a `kubectl patch` shows up as drift, and a rollback puts the
// known-good revision back and pins it.

const kubeconfig = process.env.KUBECONFIG_PATH ?? "../target/kubeenv/run/kubeconfig";

function kubectl(...args: string[]): string {
  return execFileSync("kubectl", ["--kubeconfig", kubeconfig, "-n", "web-e2e", ...args], { encoding: "utf8" });
}

async function signIn(browser: Browser, user: string): Promise<Page> {
  const context = await browser.newContext();
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

test.describe.serial("on a real control plane", () => {
  test("approve, sync, Available, drift by kubectl patch, rollback", async ({ browser }) => {
    const first = await signIn(browser, "deployer1");
    await first.goto("/applications/web");
    await hydrated(first);
    const panel = first.locator("section.request");
    await expect(panel).toContainText("0 of 2 approvals", { timeout: 30_000 });
    await panel.getByRole("button", { name: "Approve" }).click();
    await expect(first.locator(".flash")).toContainText("1 of 2");

    const second = await signIn(browser, "deployer2");
    await second.goto("/applications/web");
    await hydrated(second);
    await second.locator("section.request").getByRole("button", { name: "Approve" }).click();
    await expect(second.locator(".flash")).toContainText("synced");

    // The real controllers make a ReplicaSet and Pods; kwok nodes run them; the Deployment
    // becomes Available and Tidemark reports it healthy.
    await expect(second.locator("[data-health]").first()).toHaveText(/Healthy/, { timeout: 60_000 });
    expect(kubectl("get", "deployment", "web", "-o", "jsonpath={.status.availableReplicas}")).toBe("2");
    expect(kubectl("get", "pods", "-l", "app=web", "-o", "name").trim().split("\n")).toHaveLength(2);
    await second.screenshot({ path: "artifacts/kube-application.png", fullPage: true });

    // The Tree tab: the ReplicaSet and Pods the real controllers made, pod logs through the API
    // server (kwok serves them), and the controllers' Events on the timeline.
    await second.goto("/applications/web?tab=tree");
    const tree = second.getByTestId("resource-tree");
    await expect(tree.locator('.node[data-kind="ReplicaSet"]')).toHaveCount(1);
    await expect(tree.locator('.node[data-kind="Pod"][data-health="Healthy"]')).toHaveCount(2);
    await second.screenshot({ path: "../docs/tree-kube.png", fullPage: true });
    await second.getByTestId("logs-link").first().click();
    await expect(second.getByTestId("log-text")).toContainText("kwok line 50: GET /healthz 200");
    await second.goto("/applications/web?tab=timeline&kinds=kubernetes");
    await expect(second.locator('[data-kind="kube_event"]', { hasText: "ScalingReplicaSet Deployment/web" }).first()).toBeVisible({ timeout: 30_000 });
    await second.screenshot({ path: "artifacts/kube-events.png", fullPage: true });
    await second.goto("/applications/web");
    await hydrated(second);

    // A hand edit with kubectl is drift, with its diff.
    kubectl("patch", "deployment", "web", "--type=merge", "-p", '{"spec":{"replicas":5}}');
    await expect(second.getByTestId("drift-badge")).toBeVisible({ timeout: 30_000 });
    await second.getByRole("link", { name: "Resources" }).click();
    const web = second.locator('[data-resource="Deployment/web-e2e/web"]');
    await expect(web).toContainText("OutOfSync");
    await web.getByRole("link").click();
    const diff = second.getByTestId("diff");
    await expect(diff).toContainText(".spec.replicas");
    await expect(diff.locator(".del")).toContainText("5");
    await second.screenshot({ path: "artifacts/kube-drift.png", fullPage: true });

    // Rollback to the known-good revision: replicas back to 2, pinned.
    await second.goto("/applications/web");
    await hydrated(second);
    await second.getByTestId("rollback-open").click();
    const dialog = second.getByTestId("rollback-dialog");
    await dialog.locator("[data-revision] a").first().click();
    await dialog.getByLabel("Reason (recorded in the audit ledger)").fill("e2e: undo the hand edit");
    await dialog.getByTestId("rollback-confirm").click();
    await expect(second.locator(".flash")).toContainText("Rolled back to");
    await expect(second.getByTestId("pinned-banner")).toContainText("e2e: undo the hand edit");
    await expect(second.getByTestId("drift-badge")).toHaveCount(0, { timeout: 30_000 });
    await expect
      .poll(() => kubectl("get", "deployment", "web", "-o", "jsonpath={.spec.replicas}"), { timeout: 20_000 })
      .toBe("2");
    await second.screenshot({ path: "artifacts/kube-rolled-back.png", fullPage: true });
    await first.context().close();
    await second.context().close();
  });
});
