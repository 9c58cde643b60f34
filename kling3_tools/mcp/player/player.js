// The in-chat player card (MCP Apps). Bundled with the official App class into player.html by
// scripts/build_player.sh; nothing is fetched at run time. Text from the API is set with textContent only.
import { App } from "@modelcontextprotocol/ext-apps";

const STATUS_TOOL = "player_status";
const FIRST_POLL = 2000; // ms; then ×1.5 up to MAX_POLL
const MAX_POLL = 20000;

const $ = (id) => document.getElementById(id);
const app = new App({ name: "kling3-player", version: "1" }, {}, { autoResize: true });
let task = null; // the latest status (player_status's structured result)
let timer = null;
let pollEvery = FIRST_POLL;

function show(id, visible) {
  $(id).hidden = !visible;
}

function text(id, value) {
  $(id).textContent = value == null ? "" : String(value);
}

function minutes(seconds) {
  const s = Math.max(0, Math.round(seconds));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

function applyTheme(context) {
  const theme = context && context.theme;
  if (theme === "dark" || theme === "light") document.documentElement.dataset.theme = theme;
}

function render() {
  if (!task) return;
  text("prompt", task.prompt || "");
  text("model", task.type || "");
  text("duration", task.duration ? `${task.duration} s` : "source length");
  text("price", task.estimated_credits != null ? `${task.estimated_credits} credits` : "");
  text("state", task.status.replace("_", " "));
  $("card").dataset.status = task.status;
  const running = task.status === "queued" || task.status === "running";
  show("progress", running);
  show("result", task.status === "succeeded");
  show("problem", task.status === "failed" || task.status === "timed_out");
  if (running && task.submitted_at) {
    const age = Date.now() / 1000 - Date.parse(task.submitted_at) / 1000;
    const typical = task.expected_finish ? Date.parse(task.expected_finish) / 1000 - Date.parse(task.submitted_at) / 1000 : null;
    text("elapsed", minutes(age));
    text("typical", typical ? `about ${minutes(typical)} is typical for this model (an estimate)` : "");
  }
  if (task.status === "succeeded") {
    const url = (task.video_urls || [])[0];
    const video = $("video");
    if (url && video.getAttribute("src") !== url) video.setAttribute("src", url);
  }
  if (task.status === "failed" || task.status === "timed_out") {
    text("reason", task.error_message || "The API gave no reason.");
    text(
      "money",
      task.status === "failed"
        ? "A failed video is not charged."
        : "It ran too long to follow; the API may still finish it, and it may have been charged.",
    );
  }
}

function schedule() {
  clearTimeout(timer);
  if (!task || !(task.status === "queued" || task.status === "running")) return;
  timer = setTimeout(poll, pollEvery);
  pollEvery = Math.min(MAX_POLL, pollEvery * 1.5);
}

async function poll() {
  try {
    const result = await app.callServerTool({ name: STATUS_TOOL, arguments: { task_id: task.task_id } });
    if (!result.isError && result.structuredContent) {
      task = result.structuredContent;
      render();
    }
  } catch (error) {
    // the host or the server is busy: look again later
  }
  schedule();
}

function failedToStart(result) {
  const words = (result.content || []).filter((c) => c.type === "text").map((c) => c.text).join(" ");
  $("card").dataset.status = "failed";
  show("problem", true);
  show("progress", false);
  text("state", "not started");
  text("reason", words || "The video did not start.");
  text("money", /may have been charged|unknown/i.test(words) ? "It may have been charged: check before trying again." : "Nothing was spent.");
}

app.ontoolinput = (params) => {
  const args = params.arguments || {};
  if (args.prompt) text("prompt", args.prompt);
  if (args.type) text("model", args.type);
};

app.ontoolresult = (result) => {
  if (result.isError || !result.structuredContent || !result.structuredContent.task_id) {
    failedToStart(result);
    return;
  }
  task = result.structuredContent;
  pollEvery = FIRST_POLL;
  render();
  poll(); // the status tool adds what the first answer lacks (prompt, duration, the request)
};

app.onhostcontextchanged = (context) => applyTheme(context);

$("video").addEventListener("error", () => {
  // Most often the video's host is not among the player's media hosts ([mcp] player_media_hosts).
  text("video-note", "This video cannot play here; Download opens it.");
});

$("download").addEventListener("click", () => {
  const url = task && (task.video_urls || [])[0];
  if (url) app.openLink({ url });
});

$("again").addEventListener("click", () => {
  if (!task || !task.request) return;
  text("again-price", task.estimated_credits != null ? `This spends ${task.estimated_credits} credits.` : "");
  show("confirm", true);
});

$("cancel").addEventListener("click", () => show("confirm", false));

$("spend").addEventListener("click", async () => {
  show("confirm", false);
  const result = await app.callServerTool({ name: "generate_video", arguments: { ...task.request, wait_seconds: 0 } });
  if (result.isError || !result.structuredContent) {
    failedToStart(result);
    return;
  }
  task = result.structuredContent;
  $("video").removeAttribute("src");
  pollEvery = FIRST_POLL;
  render();
  poll();
});

app.connect().then(() => applyTheme(app.getHostContext()));
