// Driftline dashboard: draws the plotly charts, refreshes the live parts of the page every
// few seconds, and sends the actions to the JSON API with the bearer token typed in.
"use strict";

const TOKEN_KEY = "driftline.token";
let busy = false;

function drawCharts(root) {
  for (const el of root.querySelectorAll(".chart[data-figure]")) {
    const fig = JSON.parse(el.dataset.figure);
    Plotly.react(el, fig.data, fig.layout, { displaylogo: false, responsive: true });
  }
}

function updateLive(fresh) {
  for (const el of document.querySelectorAll("[data-live]")) {
    const next = fresh.getElementById(el.id);
    if (!next) continue;
    if (el.dataset.figure !== undefined) {
      if (next.dataset.figure !== el.dataset.figure) {
        el.dataset.figure = next.dataset.figure;
        drawCharts(el.parentElement);
      }
    } else if (next.innerHTML !== el.innerHTML) {
      el.innerHTML = next.innerHTML;
    }
  }
}

async function refresh() {
  if (busy) return;
  try {
    const answer = await fetch(location.href, { headers: { accept: "text/html" } });
    if (!answer.ok) return say(`refresh failed: ${answer.status}`, true);
    updateLive(new DOMParser().parseFromString(await answer.text(), "text/html"));
  } catch (err) {
    say(`refresh failed: ${err}`, true);
  }
}

function say(text, bad) {
  const status = document.getElementById("status");
  status.textContent = text;
  status.className = bad ? "bad" : "ok";
}

async function act(button) {
  if (button.dataset.confirm && !confirm(button.dataset.confirm)) return;
  const token = document.getElementById("token").value.trim();
  sessionStorage.setItem(TOKEN_KEY, token);
  const headers = token ? { authorization: `Bearer ${token}` } : {};
  busy = true;
  try {
    const answer = await fetch(button.dataset.action, { method: "POST", headers });
    const body = await answer.json().catch(() => ({}));
    if (answer.ok) say(`${button.textContent.trim()}: done (${answer.status}) ${JSON.stringify(body)}`, false);
    else say(`${button.textContent.trim()}: refused (${answer.status}): ${body.error || answer.statusText}`, true);
  } finally {
    busy = false;
  }
  setTimeout(refresh, 500);
}

document.addEventListener("DOMContentLoaded", () => {
  const token = document.getElementById("token");
  token.value = sessionStorage.getItem(TOKEN_KEY) || "";
  document.body.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action]");
    if (button) act(button);
  });
  drawCharts(document);
  setInterval(refresh, 1000 * Number(document.body.dataset.refreshS || 5));
});
