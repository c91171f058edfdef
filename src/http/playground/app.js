// The template playground's script (served by src/http/playground.rs as a file: the page's
// Content-Security-Policy allows no inline script). It asks the service for the samples and
// routes, sends each change to /playground/api/render and draws the answer: a phone-like
// chat with the message as WeCom shows it, the sizes against WeCom's limits and the exact
// requests. Everything is built with DOM calls and textContent, never innerHTML: rendered
// alerts are data from anywhere.
"use strict";

const PASTE = "\u0000paste";
const CUT = "\u2026";
const state = {
  context: null,
  route: null,
  original: "",
  seq: 0,
  renders: 0,
  timer: null,
  lastPayload: null,
};

const $ = (id) => document.getElementById(id);

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) appendText(node, String(text));
  return node;
}

// Text with the cut marker made visible: fitting puts it where it cut.
function appendText(parent, text) {
  const pieces = text.split(CUT);
  pieces.forEach((piece, i) => {
    if (piece) parent.appendChild(document.createTextNode(piece));
    if (i < pieces.length - 1) {
      const mark = el("mark", "cut");
      mark.textContent = CUT;
      mark.title = "cut here to fit WeCom's limit";
      parent.appendChild(mark);
    }
  });
}

function unescapeHtml(text) {
  return text
    .replace(/&lt;/g, "<")
    .replace(/&gt;/g, ">")
    .replace(/&quot;/g, '"')
    .replace(/&#x27;/g, "'")
    .replace(/&#39;/g, "'")
    .replace(/&#x60;/g, "`")
    .replace(/&#x3D;/g, "=")
    .replace(/&amp;/g, "&");
}

function link(text, url) {
  const a = el("a", "link", text);
  if (/^https?:\/\//i.test(url || "")) {
    a.href = url;
    a.target = "_blank";
    a.rel = "noopener noreferrer";
  }
  a.title = url || "";
  return a;
}

// ---------------------------------------------------------------------------------------
// WeCom's markdown, as its client shows it: headings, bold, links, inline code, quotes,
// <font color="info|comment|warning">, <@userid> mentions; markdown_v2 adds lists,
// code blocks and tables (and has no colours).

const INLINE =
  /\*\*([^*]+)\*\*|\[([^\]]*)\]\(([^)\s]*)\)|`([^`]+)`|<font color="(\w+)">|<\/font>|<@([^>\s]+)>|\*([^*\s][^*]*)\*/g;

function inline(parent, text) {
  const stack = [parent];
  const top = () => stack[stack.length - 1];
  let last = 0;
  for (const m of text.matchAll(INLINE)) {
    if (m.index > last) appendText(top(), unescapeHtml(text.slice(last, m.index)));
    last = m.index + m[0].length;
    if (m[1] !== undefined) inline(top().appendChild(el("strong")), m[1]);
    else if (m[2] !== undefined) top().appendChild(link(unescapeHtml(m[2]), m[3]));
    else if (m[4] !== undefined) top().appendChild(el("code", null, unescapeHtml(m[4])));
    else if (m[5] !== undefined) stack.push(top().appendChild(el("span", "font-" + m[5])));
    else if (m[0] === "</font>") {
      if (stack.length > 1) stack.pop();
    } else if (m[6] !== undefined) top().appendChild(el("span", "mention", "@" + m[6]));
    else if (m[7] !== undefined) inline(top().appendChild(el("em")), m[7]);
  }
  if (last < text.length) appendText(top(), unescapeHtml(text.slice(last)));
}

function markdown(content, v2) {
  const box = el("div", "md");
  const lines = content.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    if (v2 && line.startsWith("```")) {
      const code = [];
      for (i++; i < lines.length && !lines[i].startsWith("```"); i++) code.push(lines[i]);
      box.appendChild(el("pre", "md-code", code.join("\n")));
      continue;
    }
    if (v2 && /^\s*\|.*\|\s*$/.test(line)) {
      const table = el("table", "md-table");
      for (; i < lines.length && /^\s*\|.*\|\s*$/.test(lines[i]); i++) {
        const cells = lines[i].trim().slice(1, -1).split("|");
        if (cells.every((c) => /^\s*:?-+:?\s*$/.test(c))) continue;
        const row = table.appendChild(el("tr"));
        cells.forEach((c) => inline(row.appendChild(el(table.rows.length === 1 ? "th" : "td")), c.trim()));
      }
      i--;
      box.appendChild(table);
      continue;
    }
    const heading = /^(#{1,6})\s+(.*)$/.exec(line);
    if (heading) {
      inline(box.appendChild(el("div", "md-h" + heading[1].length)), heading[2]);
    } else if (line.startsWith(">")) {
      inline(box.appendChild(el("div", "md-quote")), line.replace(/^>\s?/, ""));
    } else if (v2 && /^\s*([-*]|\d+\.)\s+/.test(line)) {
      const item = box.appendChild(el("div", "md-li"));
      inline(item, "\u2022 " + line.replace(/^\s*([-*]|\d+\.)\s+/, ""));
    } else if (v2 && /^\s*(---|\*\*\*)\s*$/.test(line)) {
      box.appendChild(el("hr"));
    } else if (line.trim() === "") {
      box.appendChild(el("div", "md-gap"));
    } else {
      inline(box.appendChild(el("div", "md-p")), line);
    }
  }
  return box;
}

// ---------------------------------------------------------------------------------------
// Messages as WeCom's client draws them.

function textcard(card) {
  const box = el("div", "card textcard");
  box.appendChild(el("div", "tc-title", unescapeHtml(card.title || "")));
  const description = box.appendChild(el("div", "tc-desc"));
  const text = card.description || "";
  const divs = /<div class="(gray|normal|highlight)">([\s\S]*?)<\/div>|<br\s*\/?>/g;
  let last = 0;
  const plain = (s) => {
    if (s.trim()) description.appendChild(el("div", "tc-normal", unescapeHtml(s)));
  };
  for (const m of text.matchAll(divs)) {
    plain(text.slice(last, m.index));
    last = m.index + m[0].length;
    if (m[1]) description.appendChild(el("div", "tc-" + m[1], unescapeHtml(m[2])));
  }
  plain(text.slice(last));
  const footer = box.appendChild(el("div", "tc-footer"));
  footer.appendChild(link(card.btntxt || "详情", card.url));
  footer.appendChild(el("span", "chevron", "›"));
  return box;
}

const SOURCE_COLOURS = ["gray", "black", "red", "green"];

function templateCard(card) {
  const box = el("div", "card tcard");
  if (card.source) {
    const source = box.appendChild(el("div", "tn-source"));
    source.appendChild(el("span", "tn-icon"));
    source.appendChild(el("span", "tn-src-" + (SOURCE_COLOURS[card.source.desc_color] || "gray"), card.source.desc));
  }
  if (card.main_title) {
    box.appendChild(el("div", "tn-title", card.main_title.title));
    if (card.main_title.desc) box.appendChild(el("div", "tn-desc", card.main_title.desc));
  }
  if (card.emphasis_content) {
    const emphasis = box.appendChild(el("div", "tn-emphasis"));
    emphasis.appendChild(el("div", "tn-em-title", card.emphasis_content.title));
    if (card.emphasis_content.desc) emphasis.appendChild(el("div", "tn-desc", card.emphasis_content.desc));
  }
  if (card.quote_area && card.quote_area.quote_text) {
    box.appendChild(el("div", "tn-quote", card.quote_area.quote_text));
  }
  if (card.sub_title_text) box.appendChild(el("div", "tn-sub", card.sub_title_text));
  for (const row of card.horizontal_content_list || []) {
    const line = box.appendChild(el("div", "tn-row"));
    line.appendChild(el("span", "tn-key", row.keyname));
    if (row.url) line.appendChild(link(row.value || row.url, row.url));
    else line.appendChild(el("span", "tn-value", row.value));
  }
  const jumps = card.jump_list || [];
  if (jumps.length) {
    const list = box.appendChild(el("div", "tn-jumps"));
    for (const jump of jumps) {
      const row = list.appendChild(el("div", "tn-jump"));
      row.appendChild(link(jump.title, jump.url));
      row.appendChild(el("span", "chevron", "›"));
    }
  }
  const buttons = card.button_list || [];
  if (buttons.length) {
    const list = box.appendChild(el("div", "tn-buttons"));
    for (const button of buttons) {
      const b = list.appendChild(el("span", "tn-button style-" + (button.style || 1), button.text));
      b.title = "key: " + (button.key || "");
    }
  }
  if (card.card_action && card.card_action.url) {
    box.title = "tapping the card opens " + card.card_action.url;
  }
  const kind = el("div", "tn-kind", card.card_type || "template_card");
  box.appendChild(kind);
  return box;
}

function message(msgtype, content) {
  switch (msgtype) {
    case "text":
      return el("div", "bubble text", content.content);
    case "markdown":
      return wrapBubble(markdown(content.content || "", false));
    case "markdown_v2":
      return wrapBubble(markdown(content.content || "", true));
    case "textcard":
      return textcard(content);
    case "template_card":
      return templateCard(content);
    default:
      return el("pre", "bubble", JSON.stringify(content, null, 2));
  }
}

function wrapBubble(node) {
  const bubble = el("div", "bubble");
  bubble.appendChild(node);
  return bubble;
}

// ---------------------------------------------------------------------------------------
// Drawing one answer.

function routeOf(name) {
  return state.context.routes.find((r) => r.name === name);
}

function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
}

function endpoint(kind) {
  return {
    app: "POST /cgi-bin/message/send?access_token=(not shown)",
    robot: "POST /cgi-bin/webhook/send?key=(the robot's key, not shown)",
    chat: "POST /cgi-bin/appchat/send?access_token=(not shown)",
  }[kind] || "POST";
}

function draw(answer) {
  const chat = $("chat");
  const sizes = $("sizes");
  const requests = $("requests");
  clear(chat);
  clear(sizes);
  clear(requests);
  const notice = $("notice");
  notice.classList.toggle("hidden", !answer.notice);
  notice.textContent = answer.notice || "";
  const previews = answer.previews || [];
  const firstError = previews.find((p) => p.error);
  showError(firstError ? firstError.error : null, firstError ? firstError.error_at : null);
  if (previews.length) $("chat-name").textContent = previews[0].target;
  for (const p of previews) {
    const route = routeOf(p.route) || {};
    const row = chat.appendChild(el("div", "msg-row"));
    row.appendChild(el("div", "avatar", "AM"));
    const column = row.appendChild(el("div", "msg-col"));
    column.appendChild(el("div", "sender", p.route + (p.parts > 1 ? " · " + p.part + "/" + p.parts : "")));
    if (p.error) {
      column.appendChild(el("div", "bubble failed", "not sent: the template failed"));
      continue;
    }
    const body = (p.requests || [])[0] || {};
    column.appendChild(message(p.msgtype, body[p.msgtype] || {}));

    const block = sizes.appendChild(el("div", "size-block"));
    const head = block.appendChild(el("div", "size-head"));
    head.appendChild(el("strong", null, p.route + " · " + p.msgtype + (p.parts > 1 ? " · part " + p.part + "/" + p.parts : "")));
    head.appendChild(
      el("span", p.cut ? "tag cut-tag" : "tag", "alerts " + p.shown_alerts + " / " + p.total_alerts + (p.cut ? " · cut" : "")),
    );
    for (const f of p.fields || []) {
      const line = block.appendChild(el("div", "size"));
      line.dataset.field = f.field;
      const over = f.size > f.limit;
      const full = f.size >= f.limit * 0.9;
      line.appendChild(el("span", "size-name", f.field));
      const bar = line.appendChild(el("span", "bar"));
      const fill = bar.appendChild(el("span", "fill" + (over ? " over" : full ? " full" : "")));
      fill.style.width = Math.min(100, f.limit ? (100 * f.size) / f.limit : 0) + "%";
      line.appendChild(
        el("span", "size-text", f.field + " " + f.size + " / " + f.limit + " " + f.unit + (f.cut ? " \u2702 cut" : "")),
      );
    }
    (p.requests || []).forEach((request, i) => {
      const title = endpoint(route.target_kind) + (p.requests.length > 1 ? "  (" + (i + 1) + "/" + p.requests.length + ")" : "");
      requests.appendChild(el("div", "req-title", title));
      requests.appendChild(el("pre", "json", JSON.stringify(request, null, 2)));
    });
  }
  if (!previews.length && !answer.notice) chat.appendChild(el("div", "empty", "nothing to show"));
}

// ---------------------------------------------------------------------------------------
// The editor: a textarea with line numbers; an error's line is marked and selected.

function gutter(errorLine) {
  const lines = $("source").value.split("\n").length;
  const g = $("gutter");
  clear(g);
  for (let n = 1; n <= lines; n++) {
    const span = g.appendChild(el("span", n === errorLine ? "ln error-line" : "ln", String(n)));
    span.dataset.line = String(n);
    g.appendChild(document.createTextNode("\n"));
  }
  g.scrollTop = $("source").scrollTop;
}

function pointAt(line, column) {
  const source = $("source");
  const lines = source.value.split("\n");
  if (line < 1 || line > lines.length) return;
  let start = 0;
  for (let i = 0; i < line - 1; i++) start += lines[i].length + 1;
  const at = start + Math.max(0, Math.min(column - 1, lines[line - 1].length));
  const keepFocus = document.activeElement === source ? source.selectionStart : null;
  if (keepFocus === null) {
    source.setSelectionRange(start, start + lines[line - 1].length);
  }
  const lineHeight = parseFloat(getComputedStyle(source).lineHeight) || 18;
  const top = (line - 1) * lineHeight;
  if (top < source.scrollTop || top > source.scrollTop + source.clientHeight - lineHeight) {
    source.scrollTop = Math.max(0, top - source.clientHeight / 3);
  }
  source.dataset.errorAt = line + ":" + column + ":" + at;
}

function showError(message, at) {
  const box = $("error");
  box.classList.toggle("hidden", !message);
  clear(box);
  const source = $("source");
  delete source.dataset.errorAt;
  let line = null;
  if (message) {
    if (at) {
      const mine = at.edited || (!isEdited() && state.route && matchesTemplate(at.file, state.route.template));
      const where = box.appendChild(el("div", "error-at", at.file + " line " + at.line + ", column " + at.column));
      where.dataset.line = String(at.line);
      if (mine) {
        line = at.line;
        where.appendChild(el("span", "error-hint", " (marked in the editor)"));
      }
    }
    // The message as it is: its "…" are the renderer's words, not cuts.
    box.appendChild(document.createElement("pre")).textContent = message;
  }
  source.classList.toggle("has-error", line !== null);
  gutter(line);
  if (line !== null) pointAt(line, at.column);
}

function matchesTemplate(file, template) {
  return file === "built-in template " + template || file.endsWith("/" + template + ".hbs");
}

// ---------------------------------------------------------------------------------------
// Asking the service.

function isEdited() {
  return state.route && ($("source").value !== state.original || $("msgtype").value !== state.route.msgtype);
}

function schedule(delay) {
  clearTimeout(state.timer);
  state.timer = setTimeout(render, delay === undefined ? 300 : delay);
}

async function render() {
  const seq = ++state.seq;
  const request = { route: $("route").value || undefined };
  if ($("sample").value === PASTE) request.payload = $("payload").value;
  else request.sample = $("sample").value;
  if (isEdited()) request.template = { msgtype: $("msgtype").value, source: $("source").value };
  $("edited").classList.toggle("hidden", !isEdited());
  document.body.dataset.state = "loading";
  $("status").textContent = "Rendering…";
  let answer;
  let status;
  try {
    const response = await fetch("/playground/api/render", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(request),
      credentials: "same-origin",
    });
    status = response.status;
    answer = await response.json();
  } catch (e) {
    answer = { status: "error", error: "the service did not answer: " + e };
  }
  if (seq !== state.seq) return; // a newer render is on its way
  state.renders++;
  document.body.dataset.renders = String(state.renders);
  if (answer.status === "ok") {
    $("chat").classList.remove("stale");
    state.lastPayload = answer.payload;
    draw(answer);
    const failed = (answer.previews || []).some((p) => p.error);
    document.body.dataset.state = failed ? "error" : "rendered";
    const ms = answer.elapsed_ms !== undefined ? " in " + answer.elapsed_ms.toFixed(1) + " ms" : "";
    $("status").textContent =
      (failed ? "The template failed" : "Rendered") + ms + (isEdited() ? " with the edited template" : " with the route's template");
  } else {
    document.body.dataset.state = "error";
    const stale = $("chat").childElementCount > 0;
    $("chat").classList.toggle("stale", stale);
    $("status").textContent = "Not rendered (HTTP " + status + ")" + (stale ? ": the phone shows the last rendering" : "");
    if (answer.error_at) {
      showError(answer.error, answer.error_at);
    } else {
      showError(answer.error || "unexpected answer", null);
    }
  }
}

function fillMsgtypes() {
  const select = $("msgtype");
  clear(select);
  for (const t of state.route.msgtypes) {
    const option = select.appendChild(el("option", null, t));
    option.value = t;
  }
  select.value = state.route.msgtype;
}

function pickRoute() {
  state.route = routeOf($("route").value);
  if (!state.route) return;
  state.original = state.route.source || "";
  $("source").value = state.original;
  $("template-name").textContent = state.route.template + " (" + state.route.target_kind + " " + state.route.target + ")";
  fillMsgtypes();
  gutter(null);
  schedule(0);
}

function pickSample() {
  const paste = $("sample").value === PASTE;
  $("payload-box").classList.toggle("hidden", !paste);
  if (paste) {
    if (!$("payload").value && state.lastPayload) $("payload").value = JSON.stringify(state.lastPayload, null, 2);
    $("about").textContent =
      "Paste a webhook body (up to " + state.context.max_payload_bytes + " bytes); it is routed as Alertmanager's would be.";
  } else {
    const sample = state.context.samples.find((s) => s.name === $("sample").value);
    $("about").textContent = sample
      ? sample.about + " (" + sample.alerts + (sample.alerts === 1 ? " alert" : " alerts") + "; adapted to the route: its matchers' labels, resolved ones only if it sends them)"
      : "";
  }
  schedule(0);
}

async function start() {
  document.body.dataset.state = "loading";
  let response;
  try {
    response = await fetch("/playground/api/context", { credentials: "same-origin" });
    state.context = await response.json();
  } catch (e) {
    $("status").textContent = "Cannot load the playground: " + e;
    document.body.dataset.state = "error";
    return;
  }
  if (!response.ok) {
    $("status").textContent = "Cannot load the playground: " + (state.context.error || response.status);
    document.body.dataset.state = "error";
    return;
  }
  const sample = $("sample");
  for (const s of state.context.samples) {
    const option = sample.appendChild(el("option", null, s.name));
    option.value = s.name;
  }
  const paste = sample.appendChild(el("option", null, "paste a payload…"));
  paste.value = PASTE;
  const route = $("route");
  for (const r of state.context.routes) {
    const option = route.appendChild(el("option", null, r.name + " → " + r.target_kind + " " + r.target));
    option.value = r.name;
  }
  sample.addEventListener("change", pickSample);
  route.addEventListener("change", pickRoute);
  // A template is written for one msgtype: switching it loads that msgtype's own template,
  // unless the editor holds changes of the user's.
  $("msgtype").addEventListener("change", () => {
    const source = $("source");
    const msgtype = $("msgtype").value;
    const builtin = state.context.builtin || {};
    if (source.value === state.original || Object.values(builtin).includes(source.value)) {
      source.value = msgtype === state.route.msgtype ? state.original : builtin[msgtype] || source.value;
      gutter(null);
    }
    schedule(0);
  });
  $("payload").addEventListener("input", () => schedule());
  const source = $("source");
  source.addEventListener("input", () => {
    gutter(null);
    schedule();
  });
  source.addEventListener("scroll", () => ($("gutter").scrollTop = source.scrollTop));
  source.addEventListener("keydown", (event) => {
    if (event.key === "Tab") {
      event.preventDefault();
      document.execCommand("insertText", false, "  ");
    }
  });
  $("reset").addEventListener("click", () => {
    source.value = state.original;
    $("msgtype").value = state.route.msgtype;
    gutter(null);
    schedule(0);
  });
  pickSample();
  pickRoute();
}

document.addEventListener("DOMContentLoaded", start);
