// The in-chat player card (MCP Apps). Bundled with the official App class into player.html by
// scripts/build_player.sh; nothing is fetched at run time. Text from the API is set with textContent only,
// and only http(s) URLs reach the video element or the host.
import { App } from "@modelcontextprotocol/ext-apps";

const STATUS_TOOL = "player_status";
const FIRST_POLL = 2000; // ms; then ×1.5 up to MAX_POLL
const MAX_POLL = 20000;
const MAX_FAILED_POLLS = 5;

const $ = (id) => document.getElementById(id);
const app = new App({ name: "kling3-player", version: "1" }, {}, { autoResize: true });
let task = null; // the latest status (player_status's structured result)
let timer = null;
let ticker = null;
let pollEvery = FIRST_POLL;
let failedPolls = 0;
let spending = false;
let starting = false; // the bound tool is generate_video (its failure means nothing started)

const show = (id, visible) => { $(id).hidden = !visible; };
const text = (id, value) => { $(id).textContent = value == null ? "" : String(value); };
const isRunning = (t) => t && (t.status === "queued" || t.status === "running");

function webUrl(value) {
  try {
    const url = new URL(String(value));
    return url.protocol === "https:" || url.protocol === "http:" ? url.href : null;
  } catch {
    return null;
  }
}

function minutes(seconds) {
  const s = Math.max(0, Math.round(seconds));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

function applyTheme(context) {
  const theme = context && context.theme;
  if (theme === "dark" || theme === "light") document.documentElement.dataset.theme = theme;
}

function tick() {
  if (!isRunning(task) || !task.submitted_at) return;
  const started = Date.parse(task.submitted_at) / 1000;
  text("elapsed", minutes(Date.now() / 1000 - started));
  const typical = task.expected_finish ? Date.parse(task.expected_finish) / 1000 - started : null;
  text("typical", typical ? `about ${minutes(typical)} is typical for this model (an estimate)` : "");
}

function render() {
  if (!task) return;
  if (task.prompt != null) text("prompt", task.prompt);
  if (task.type) text("model", task.type);
  if (task.duration !== undefined) text("duration", task.duration ? `${task.duration} s` : "source length");
  if (task.estimated_credits != null) text("price", `${task.estimated_credits} credits`);
  text("state", task.status.replace("_", " "));
  $("card").dataset.status = task.status;
  show("progress", isRunning(task));
  show("result", task.status === "succeeded");
  show("problem", task.status === "failed" || task.status === "timed_out");
  clearInterval(ticker);
  if (isRunning(task)) {
    tick();
    ticker = setInterval(tick, 1000);
  }
  if (task.status === "succeeded") {
    const url = webUrl((task.video_urls || [])[0]);
    const video = $("video");
    if (!url) text("video-note", "The video's address is not a web address; it is not shown.");
    else if (video.getAttribute("src") !== url) video.setAttribute("src", url);
    $("again").disabled = !task.request || spending;
  }
  if (task.status === "failed" || task.status === "timed_out") {
    text("reason", task.error_message || "The API gave no reason.");
    const consumed = task.consumed_credits || 0;
    text(
      "money",
      task.status === "timed_out"
        ? "It ran too long to follow; the API may still finish it, and it may have been charged."
        : consumed > 0
          ? `The API reports ${consumed} credits consumed for it.`
          : "A failed video is not charged.",
    );
  }
}

function schedule() {
  clearTimeout(timer);
  if (!isRunning(task)) return;
  timer = setTimeout(poll, pollEvery);
  pollEvery = Math.min(MAX_POLL, pollEvery * 1.5);
}

function stopFollowing(message) {
  clearTimeout(timer);
  clearInterval(ticker);
  show("progress", false);
  text("state", "not followed");
  text("video-note", "");
  show("problem", true);
  text("reason", message);
  text("money", "The video goes on; ask for its status in the conversation.");
}

async function poll() {
  try {
    const result = await app.callServerTool({ name: STATUS_TOOL, arguments: { task_id: task.task_id } });
    if (!result.isError && result.structuredContent) {
      failedPolls = 0;
      task = result.structuredContent;
      render();
    } else if (++failedPolls >= MAX_FAILED_POLLS || /not one of this client/i.test(words(result))) {
      stopFollowing(words(result) || "This video's status cannot be read here.");
      return;
    }
  } catch {
    if (++failedPolls >= MAX_FAILED_POLLS) {
      stopFollowing("The host stopped answering; this card no longer follows the video.");
      return;
    }
  }
  schedule();
}

function words(result) {
  return (result.content || []).filter((c) => c.type === "text").map((c) => c.text).join(" ");
}

function notStarted(result, mayBeCharged) {
  const message = words(result);
  clearTimeout(timer);
  clearInterval(ticker);
  $("card").dataset.status = "failed";
  show("progress", false);
  show("result", false);
  show("problem", true);
  text("reason", message || "The video did not start.");
  if (starting || mayBeCharged) {
    text("state", "not started");
    text(
      "money",
      mayBeCharged || /may have been charged|unknown/i.test(message)
        ? "It may have been charged: check before trying again."
        : "Nothing was spent.",
    );
  } else {
    text("state", "status unknown");
    text("money", "The status could not be read; the video itself may still be running.");
  }
}

function follow(taskId) {
  task = { task_id: taskId, status: "running" };
  failedPolls = 0;
  pollEvery = FIRST_POLL;
  render();
  poll(); // the status tool adds what the first answer lacks (prompt, duration, the request)
}

app.ontoolinput = (params) => {
  const args = params.arguments || {};
  starting = Boolean(args.prompt || args.type);
  if (args.prompt) text("prompt", args.prompt);
  if (args.type) text("model", args.type);
  if (args.task_id && !task) follow(String(args.task_id)); // wait_for_video: follow while the tool waits
};

app.ontoolresult = (result) => {
  if (result.isError || !result.structuredContent || !result.structuredContent.task_id) {
    notStarted(result, false);
    return;
  }
  task = result.structuredContent;
  follow(task.task_id);
};

app.ontoolcancelled = () => {
  clearTimeout(timer);
  clearInterval(ticker);
  show("progress", false);
  text("state", "cancelled");
};

app.onteardown = () => {
  clearTimeout(timer);
  clearInterval(ticker);
  return {};
};

app.onhostcontextchanged = (context) => applyTheme(context);

$("video").addEventListener("error", () => {
  // Most often the video's host is not among the player's media hosts ([mcp] player_media_hosts).
  text("video-note", "This video cannot play here; Download opens it.");
});

$("download").addEventListener("click", async () => {
  const url = task && webUrl((task.video_urls || [])[0]);
  if (!url) return;
  try {
    const opened = await app.openLink({ url });
    if (opened && opened.isError) text("video-note", "The host would not open it.");
  } catch {
    text("video-note", "The host would not open it.");
  }
});

$("again").addEventListener("click", () => {
  if (!task || !task.request || spending) return;
  text("again-price", task.estimated_credits != null ? `This spends ${task.estimated_credits} credits.` : "");
  show("confirm", true);
});

$("cancel").addEventListener("click", () => show("confirm", false));

$("spend").addEventListener("click", async () => {
  if (spending || !task || !task.request) return;
  spending = true; // one click, one generate
  $("spend").disabled = true;
  $("again").disabled = true;
  show("confirm", false);
  try {
    const result = await app.callServerTool({ name: "generate_video", arguments: { ...task.request, wait_seconds: 0 } });
    if (result.isError || !result.structuredContent) {
      starting = true;
      notStarted(result, false);
      return;
    }
    $("video").removeAttribute("src");
    text("video-note", "");
    task = result.structuredContent;
    follow(task.task_id);
  } catch {
    starting = true;
    notStarted({ content: [{ type: "text", text: "No answer came back from the host." }] }, true);
  } finally {
    spending = false;
    $("spend").disabled = false;
  }
});

app.connect().then(() => applyTheme(app.getHostContext()));
