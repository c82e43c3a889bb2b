import { expect, Page, test } from "@playwright/test";

// The Tree tab of podinfo (auto-synced, 2 replicas): the sandbox's simulated controllers make
// a ReplicaSet and two Running pods. The tab is server-rendered HTML, so it works before (and
// without) the WASM: filters are GET forms, actions POST forms with a confirmation step.

async function eventually(page: Page, check: () => Promise<void>) {
  await expect(async () => {
    await page.reload();
    await check();
  }).toPass({ timeout: 30_000 });
}

test("the tree shows podinfo's ReplicaSet and pods, a live manifest, pod logs and a restart", async ({ page }) => {
  test.setTimeout(90_000);
  await page.goto("/applications/podinfo?tab=tree");
  const tree = page.getByTestId("resource-tree");
  await eventually(page, async () => {
    await expect(tree.locator('.node[data-kind="Pod"][data-health="Healthy"]')).toHaveCount(2, { timeout: 1_000 });
  });
  await expect(tree.locator('.node[data-kind="Deployment"][data-name="podinfo"]')).toContainText("2/2 ready");
  await expect(tree.locator('.node[data-kind="ReplicaSet"]')).toHaveCount(1);
  await expect(tree.locator('.node[data-kind="Pod"]').first()).toContainText("Running");
  await page.screenshot({ path: "../docs/tree.png", fullPage: true });

  // Filter: only pods (and their ancestors).
  await page.getByLabel("Kind").selectOption("Pod");
  await page.getByRole("button", { name: "Filter" }).click();
  await expect(page).toHaveURL(/kind=Pod/);
  await expect(tree.locator('.node[data-kind="Namespace"]')).toHaveCount(0);
  await expect(tree.locator('.node[data-kind="Pod"]')).toHaveCount(2);

  // The live manifest of the Deployment beside Git's, managedFields hidden.
  await tree.locator('.node[data-kind="Deployment"] a', { hasText: "podinfo" }).first().click();
  const manifest = page.getByTestId("live-manifest");
  await expect(manifest).toContainText("Desired (Git)");
  await expect(manifest).toContainText("image: ghcr.io/stefanprodan/podinfo:6.5.0");
  await expect(manifest.locator("pre").first()).not.toContainText("managedFields:");
  await page.screenshot({ path: "artifacts/tree-manifest.png", fullPage: true });
  await manifest.getByRole("link", { name: "Show managedFields" }).click();
  await expect(page.getByTestId("live-manifest").locator("pre").first()).toContainText("managedFields:");

  // Pod logs: the last lines, then followed as the pod writes more.
  await page.goto("/applications/podinfo?tab=tree");
  await page.getByTestId("logs-link").first().click();
  const logs = page.getByTestId("log-text");
  await expect(logs).toContainText("podinfo line 50: GET /healthz 200");
  await page.getByTestId("follow").click();
  await expect(logs).toContainText("podinfo line 51", { timeout: 10_000 });
  await expect(page.getByTestId("follow")).toHaveText("Stop");
  await page.screenshot({ path: "../docs/tree-logs.png", fullPage: true });
  await page.getByTestId("follow").click();

  // Restart, confirmed with a reason: audited, on the timeline, new pods.
  const before = await tree.locator('.node[data-kind="Pod"]').evaluateAll((ns) => ns.map((n) => n.getAttribute("data-name")));
  const deployment = tree.locator("li", { has: page.locator('.node[data-kind="Deployment"][data-name="podinfo"]') }).first();
  await deployment.locator(".node-action > summary", { hasText: "Restart" }).first().click();
  const confirm = deployment.getByTestId("action-restart").first();
  await confirm.getByLabel("Reason").fill("pick up the rotated certificate");
  await confirm.getByRole("button", { name: "Restart Deployment/podinfo" }).click();
  await expect(page).toHaveURL(/tab=tree/);
  await eventually(page, async () => {
    const after = await page.getByTestId("resource-tree").locator('.node[data-kind="Pod"]').evaluateAll((ns) => ns.map((n) => n.getAttribute("data-name")));
    expect(after.length).toBe(2);
    expect(after.some((n) => before.includes(n))).toBe(false);
  });
  await page.goto("/applications/podinfo?tab=timeline&kinds=kubernetes");
  await expect(page.locator('[data-kind="resource_action"]').first()).toContainText("restarted Deployment podinfo/podinfo (by ");
  await expect(page.locator('[data-kind="resource_action"]').first()).toContainText("pick up the rotated certificate");

  // A restart is not drift: podinfo stays Synced.
  await expect(page.locator(".app-head [data-sync]")).toHaveText(/Synced/);
});
