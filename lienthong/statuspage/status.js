// The status page's live refresh and its requeue buttons; the HTML comes from the server.
"use strict";
(() => {
  const meta = (name) => document.querySelector(`meta[name="${name}"]`).content;
  const token = meta("lienthong-token");
  const refreshMs = Number(meta("lienthong-refresh")) * 1000;
  const notice = document.getElementById("notice");
  let refreshes = 0;

  function tell(text) {
    notice.textContent = text;
    notice.hidden = false;
  }

  async function refresh() {
    try {
      const response = await fetch("status.json", { cache: "no-store" });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const body = await response.json();
      for (const [id, html] of Object.entries(body.html)) {
        const element = document.getElementById(id);
        if (element) element.innerHTML = html;
      }
      refreshes += 1;
      document.body.dataset.refreshes = String(refreshes);
      document.body.classList.remove("stale");
    } catch (error) {
      // Keep the last figures on screen, marked as stale.
      document.body.classList.add("stale");
      tell(`The page could not be refreshed (${error.message}); the figures shown may be old.`);
    }
  }

  async function requeue(button) {
    const what = `${button.dataset.kind} of document ${button.dataset.document}`;
    if (!window.confirm(`Requeue this ${what}? The node will try to send it again.`)) return;
    button.disabled = true;
    try {
      const response = await fetch("requeue", {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-Lienthong-Token": token },
        body: JSON.stringify({ id: button.dataset.requeue }),
      });
      const body = await response.json();
      tell(response.ok ? `Requeued: ${what}.` : `Not requeued: ${body.error}`);
    } catch (error) {
      tell(`Not requeued: ${error.message}`);
    }
    await refresh();
  }

  document.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-requeue]");
    if (button) requeue(button);
  });
  window.setInterval(refresh, refreshMs);
  refresh();
})();
