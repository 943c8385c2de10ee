// The job page's log: "load earlier" prepends older chunks on demand, and while the job runs
// the log follows live from the console's stream of it. Text only (textContent): a log is never
// parsed as HTML.
"use strict";

(function () {
  const log = document.getElementById("log");
  if (!log) return;
  const state = document.getElementById("log-state");
  const nearBottom = () => log.scrollHeight - log.scrollTop - log.clientHeight < 40;
  log.scrollTop = log.scrollHeight;

  const earlier = document.getElementById("log-earlier");
  if (earlier) {
    earlier.addEventListener("click", async () => {
      earlier.disabled = true;
      const url = earlier.dataset.url + "?before=" + encodeURIComponent(earlier.dataset.before);
      const response = await fetch(url, { credentials: "same-origin" });
      if (!response.ok) { earlier.disabled = false; return; }
      const page = await response.json();
      const height = log.scrollHeight;
      log.textContent = page.text + log.textContent;
      log.scrollTop += log.scrollHeight - height;
      earlier.dataset.before = page.first;
      if (page.more) earlier.disabled = false; else earlier.remove();
    });
  }

  const follow = log.dataset.follow;
  if (!follow) return;
  const decoder = new TextDecoder();
  (async () => {
    if (state) state.textContent = "following";
    try {
      const url = follow + "?after=" + encodeURIComponent(log.dataset.after || "0");
      const response = await fetch(url, { credentials: "same-origin" });
      if (!response.ok || !response.body) throw new Error(String(response.status));
      const reader = response.body.getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        const stick = nearBottom();
        log.append(decoder.decode(value, { stream: true }));
        if (stick) log.scrollTop = log.scrollHeight;
      }
      if (state) state.textContent = "the job has ended";
    } catch (error) {
      if (state) state.textContent = "not following (reload to try again)";
    }
  })();
})();

// A polled part of a page is not replaced while the keyboard is in it: the swap would take the
// focus away (a link or button being reached with Tab). It is refreshed at the next poll after.
document.addEventListener("htmx:beforeRequest", (event) => {
  const target = event.detail && event.detail.elt;
  if (target && target.contains(document.activeElement) && document.activeElement !== document.body) {
    event.preventDefault();
  }
});
