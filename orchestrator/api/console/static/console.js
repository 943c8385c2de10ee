// The job page's log: "load earlier" prepends older lines on demand, and while the job runs
// the log follows live from the console's stream of it (a JSON object a line of output). Text
// only (textContent): a log is never parsed as HTML. A line written to stderr is marked in
// colour and by a "stderr" label at its start.
"use strict";

(function () {
  const log = document.getElementById("log");
  if (!log) return;
  const state = document.getElementById("log-state");
  const nearBottom = () => log.scrollHeight - log.scrollTop - log.clientHeight < 40;
  log.scrollTop = log.scrollHeight;
  // Whether the log shown so far ends at a line's end (a label goes only at a line's start).
  let lineStart = log.textContent === "" || log.textContent.endsWith("\n");

  // The nodes of ``lines`` ({stream, text}), and whether they end at a line's end.
  function render(lines, start) {
    const fragment = document.createDocumentFragment();
    for (const line of lines) {
      if (line.stream === "stderr") {
        const span = document.createElement("span");
        span.className = "stderr";
        if (start) {
          const label = document.createElement("span");
          label.className = "stream-label";
          label.textContent = "stderr ";
          span.append(label);
        }
        span.append(line.text);
        fragment.append(span);
      } else {
        fragment.append(line.text);
      }
      start = line.text.endsWith("\n");
    }
    return { fragment, start };
  }

  const earlier = document.getElementById("log-earlier");
  if (earlier) {
    earlier.addEventListener("click", async () => {
      earlier.disabled = true;
      const url = earlier.dataset.url + "?before=" + encodeURIComponent(earlier.dataset.before);
      const response = await fetch(url, { credentials: "same-origin" });
      if (!response.ok) { earlier.disabled = false; return; }
      const page = await response.json();
      const height = log.scrollHeight;
      log.prepend(render(page.lines, true).fragment);
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
      let held = "";  // the start of a JSON line whose end has not come yet
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        held += decoder.decode(value, { stream: true });
        const end = held.lastIndexOf("\n");
        if (end < 0) continue;
        const lines = held.slice(0, end).split("\n").map((line) => JSON.parse(line));
        held = held.slice(end + 1);
        const stick = nearBottom();
        const shown = render(lines, lineStart);
        lineStart = shown.start;
        log.append(shown.fragment);
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
