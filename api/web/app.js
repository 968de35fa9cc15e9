// The web page: ask a question and watch the answer arrive (POST /ask/stream), read the cited
// passages, browse the articles (GET /documents). Plain DOM code, no framework. Text from the
// server is only ever inserted as text (textContent, append of strings), never parsed as HTML.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const KEY_STORE = "rag.apiKey";
  const CONTEXT_CHARS = 220; // characters of the article shown on each side of a quote
  const PAGE_SIZE = 20;

  // -- small helpers ---------------------------------------------------------------------------

  /** An element with attributes and children; strings become text nodes. */
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "class") node.className = value;
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children) if (child !== null && child !== undefined) node.append(child);
    return node;
  }

  /** The URL if it is a web address, else null: a stored url must not become a javascript: link. */
  function webUrl(url) {
    if (!url) return null;
    try {
      const parsed = new URL(url);
      return parsed.protocol === "http:" || parsed.protocol === "https:" ? parsed.href : null;
    } catch {
      return null;
    }
  }

  /** The day of an ISO date or date-time, as a <time> element. */
  function dateElement(value) {
    return el("time", { datetime: value }, value.length > 10 && value[10] === "T" ? value.slice(0, 10) : value);
  }

  /** "a · b · c" out of the parts that are present. */
  function joined(parts) {
    const out = [];
    for (const part of parts.filter(Boolean)) {
      if (out.length) out.push(" · ");
      out.push(part);
    }
    return out;
  }

  /** The text as a sentence: capital first letter, closing full stop. */
  function sentence(text) {
    const trimmed = text.trim();
    return trimmed.charAt(0).toUpperCase() + trimmed.slice(1) + (/[.!?]$/.test(trimmed) ? "" : ".");
  }

  /** The API path of a document: ids may hold slashes, each segment is encoded. */
  function documentPath(id) {
    return "/documents/" + id.split("/").map(encodeURIComponent).join("/");
  }

  // -- talking to the API ----------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, message, midStream = false) {
      super(message);
      this.status = status; // 0: no HTTP status (no connection, a broken stream)
      this.midStream = midStream;
    }
  }

  function requestHeaders(extra = {}) {
    const key = sessionStorage.getItem(KEY_STORE);
    return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
  }

  /** The API's error bodies are {"detail": text} or, for invalid input, {"detail": [{loc, msg}]}. */
  function describeDetail(detail) {
    if (typeof detail === "string") return detail;
    if (Array.isArray(detail)) {
      return detail.map((item) => {
        const where = (item.loc || []).filter((part) => part !== "body" && part !== "query").join(".");
        return where ? `${where}: ${item.msg}` : String(item.msg);
      }).join("; ");
    }
    return "";
  }

  async function errorFrom(response) {
    let detail = "";
    try {
      detail = describeDetail((await response.json()).detail);
    } catch {
      // not JSON (a proxy's page, say): the status line says enough
    }
    if (detail.length > 600) detail = detail.slice(0, 600) + "…";
    return new ApiError(response.status, detail || response.statusText || "the request failed");
  }

  async function send(path, options = {}) {
    let response;
    try {
      response = await fetch(path, { ...options, headers: requestHeaders(options.headers) });
    } catch (err) {
      if (err.name === "AbortError") throw err;
      throw new ApiError(0, "the server could not be reached");
    }
    if (!response.ok) throw await errorFrom(response);
    return response;
  }

  async function getJSON(path) {
    return (await send(path, { headers: { Accept: "application/json" } })).json();
  }

  /** The server-sent events of a response body, as {event, data} with data parsed from JSON. */
  async function* serverEvents(body) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let held = ""; // a "\r" at the end of a read may be the first half of "\r\n"
    let event = "message";
    let data = [];
    for (;;) {
      const { value, done } = await reader.read();
      let text = held + (value || "");
      held = "";
      if (!done && text.endsWith("\r")) {
        held = "\r";
        text = text.slice(0, -1);
      }
      buffer += text.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, end);
        buffer = buffer.slice(end + 1);
        if (line === "") {
          if (data.length) yield { event, data: parseEventData(data.join("\n")) };
          event = "message";
          data = [];
        } else if (!line.startsWith(":")) { // ":" starts a comment: the server's keep-alive pings
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          let fieldValue = colon < 0 ? "" : line.slice(colon + 1);
          if (fieldValue.startsWith(" ")) fieldValue = fieldValue.slice(1);
          if (field === "event") event = fieldValue;
          else if (field === "data") data.push(fieldValue);
        }
      }
      if (done) return;
    }
  }

  function parseEventData(text) {
    try {
      return JSON.parse(text);
    } catch {
      throw new ApiError(0, "the server sent an event that could not be read", true);
    }
  }

  // -- messages --------------------------------------------------------------------------------

  /** Shows the error in the alert box, placed after ``anchor`` (by default the current view's
   * heading), so that it appears where the user is looking. */
  function showError(err, anchor = null) {
    const box = $("error");
    if (!anchor) anchor = document.querySelector("main > section:not([hidden]) h1");
    if (anchor) anchor.after(box);
    let lead;
    if (!(err instanceof ApiError)) {
      lead = "Something went wrong in this page.";
      err = { message: String(err && err.message ? err.message : err), status: 0 };
    } else if (err.midStream) {
      lead = `The answer broke off${err.status ? ` (${err.status})` : ""}.`;
    } else if (err.status === 401) {
      lead = "This server needs an API key (401).";
    } else if (err.status === 403) {
      lead = "The API key was not accepted (403).";
    } else if (err.status === 0) {
      lead = "No answer from the server.";
    } else if (err.status >= 500) {
      lead = `The server could not do this (${err.status}).`;
    } else {
      lead = `The server refused the request (${err.status}).`;
    }
    box.replaceChildren(el("strong", {}, lead), " ", sentence(err.message || "no reason was given"));
    box.hidden = false;
    if (err.status === 401 || err.status === 403) {
      $("key-panel").open = true;
      $("key-input").focus();
    }
  }

  function clearError() {
    $("error").hidden = true;
    $("error").replaceChildren();
  }

  function setStatus(text) {
    $("status").textContent = text;
  }

  // -- the API key -----------------------------------------------------------------------------

  function showKeyState() {
    $("key-state").textContent = sessionStorage.getItem(KEY_STORE) ? "(set for this tab)" : "(none)";
  }

  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("key-input").value.trim();
    if (key) sessionStorage.setItem(KEY_STORE, key);
    else sessionStorage.removeItem(KEY_STORE);
    $("key-input").value = "";
    showKeyState();
    clearError();
    $("key-panel").open = false;
    loadGenerators();
    route(); // show the current view again, now with the key
  });

  $("key-forget").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORE);
    $("key-input").value = "";
    showKeyState();
  });

  // -- views -----------------------------------------------------------------------------------

  const VIEWS = { ask: "view-ask", documents: "view-documents", document: "view-document" };

  function showView(name) {
    for (const [view, id] of Object.entries(VIEWS)) $(id).hidden = view !== name;
    const tab = name === "ask" ? "nav-ask" : "nav-documents";
    for (const id of ["nav-ask", "nav-documents"]) {
      if (id === tab) $(id).setAttribute("aria-current", "page");
      else $(id).removeAttribute("aria-current");
    }
    document.title = (name === "ask" ? "Ask" : "Documents") + " · rag";
  }

  /** Views live in the fragment: #ask, #documents[&q=..&offset=..], #document=ID[&start=..&end=..]. */
  function route() {
    const params = new URLSearchParams(location.hash.slice(1));
    const number = (name) => {
      const value = Number.parseInt(params.get(name) || "", 10);
      return Number.isFinite(value) && value >= 0 ? value : null;
    };
    if (params.has("document")) {
      openDocument(params.get("document"), number("start"), number("end"));
    } else if (params.has("documents")) {
      listDocuments(params.get("q") || "", number("offset") || 0);
    } else if (params.has("ask") || location.hash.length <= 1) {
      showView("ask");
    } // any other fragment (the skip link's) leaves the view as it is
  }

  window.addEventListener("hashchange", () => {
    clearError();
    route();
  });

  // -- asking ----------------------------------------------------------------------------------

  let running = null; // the AbortController of the answer being streamed
  let streamed = ""; // answer text received so far
  const documentTexts = new Map(); // doc id -> Promise of the article, for quotes without a passage

  async function loadGenerators() {
    let list;
    try {
      list = await getJSON("/generators");
    } catch (err) {
      showError(err);
      return;
    }
    const select = $("generator");
    const chosen = select.value || list.default;
    select.replaceChildren(...list.generators.map(({ name }) =>
      el("option", { value: name }, name === list.default ? `${name} (default)` : name)));
    select.value = list.generators.some((g) => g.name === chosen) ? chosen : list.default;
  }

  function resetAnswer() {
    clearError();
    streamed = "";
    $("result").hidden = false;
    $("refusal").hidden = true;
    $("answer").hidden = false;
    $("answer").replaceChildren();
    $("answer").classList.remove("incomplete");
    $("answer-meta").textContent = "";
    $("citations").replaceChildren();
    $("citations-block").hidden = true;
    $("passages").replaceChildren();
    $("passages-block").hidden = true;
  }

  function setBusy(busy) {
    $("ask-button").disabled = busy;
    $("stop-button").hidden = !busy;
    $("answer").setAttribute("aria-busy", busy ? "true" : "false");
  }

  async function ask(question, generator) {
    if (running) running.abort();
    const controller = new AbortController();
    running = controller;
    resetAnswer();
    setBusy(true);
    setStatus("Searching the articles…");
    const body = { question };
    if (generator) body.generator = generator;
    try {
      const response = await send("/ask/stream", {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
        body: JSON.stringify(body),
        signal: controller.signal,
      });
      setStatus("Writing the answer…");
      let answered = false;
      for await (const { event, data } of serverEvents(response.body)) {
        if (event === "token") {
          streamed += data.text;
          $("answer").textContent = streamed;
        } else if (event === "answer") {
          answered = true;
          showAnswer(data);
        } else if (event === "error") {
          throw new ApiError(data.status || 0, data.detail || "the answer failed", true);
        }
      }
      if (!answered) throw new ApiError(0, "the connection closed before the answer was complete", true);
    } catch (err) {
      if (controller.signal.aborted) {
        setStatus("Stopped.");
        $("answer").classList.add("incomplete");
        return;
      }
      setStatus("");
      if (streamed) $("answer").classList.add("incomplete");
      else $("result").hidden = true;
      showError(err, $("status"));
    } finally {
      if (running === controller) {
        running = null;
        setBusy(false);
      }
    }
  }

  function showAnswer(answer) {
    const total = answer.timings_ms && answer.timings_ms.total;
    $("answer-meta").textContent = `${answer.generator}` + (total ? ` · ${Math.round(total)} ms` : "");
    if (answer.abstained) {
      setStatus("No answer found in the articles.");
      $("answer").hidden = true;
      $("refusal").replaceChildren(el("strong", {}, "No answer."), " ", sentence(answer.reason ||
        "the articles do not answer this question"));
      $("refusal").hidden = false;
    } else {
      setStatus("Answered.");
      showAnswerText(answer.answer || "", answer.citations);
      showCitations(answer.citations, answer.passages);
      const check = answer.check;
      if (check && check.dropped) {
        $("answer-meta").append(` · ${check.dropped} of ${check.sentences} sentences left out: ` +
          "the articles did not support them");
      }
    }
    showPassages(answer.passages);
  }

  /** The answer with each [n] that names a citation made a link to it. */
  function showAnswerText(text, citations) {
    const known = new Set(citations.map((c) => c.n));
    const parts = [];
    let last = 0;
    for (const match of text.matchAll(/\[(\d+)\]/g)) {
      const n = Number(match[1]);
      if (!known.has(n)) continue;
      parts.push(text.slice(last, match.index));
      parts.push(el("a", { class: "marker", href: `#cite-${n}`, "data-n": n, "aria-label": `source ${n}` },
        `[${n}]`));
      last = match.index + match[0].length;
    }
    parts.push(text.slice(last));
    $("answer").replaceChildren(...parts);
  }

  // A marker moves focus to its source instead of changing the fragment (which names views).
  $("answer").addEventListener("click", (event) => {
    const marker = event.target.closest("a.marker");
    if (!marker) return;
    event.preventDefault();
    const item = $(`cite-${marker.dataset.n}`);
    if (!item) return;
    for (const other of document.querySelectorAll(".citation.current")) other.classList.remove("current");
    item.classList.add("current");
    item.focus();
  });

  function showCitations(citations, passages) {
    $("citations").replaceChildren(...citations.map((c) => citationItem(c, passages)));
    $("citations-block").hidden = citations.length === 0;
  }

  function citationItem(citation, passages) {
    const sameDoc = passages.find((p) => p.doc_id === citation.doc_id);
    const url = webUrl(citation.url);
    const title = url ? el("a", { href: url, rel: "noopener noreferrer" }, citation.title) : citation.title;
    const meta = el("p", { class: "muted small" }, ...joined([
      sameDoc && sameDoc.source,
      citation.published_at && dateElement(citation.published_at),
      el("span", { class: "id" }, citation.doc_id),
      `characters ${citation.start}–${citation.end}`,
      citation.supported === false ? el("strong", { class: "flag" }, "not supported") : null,
    ]));
    const context = el("blockquote", { class: "context" }, citation.quote);
    const read = el("a", {
      href: "#" + new URLSearchParams({ document: citation.doc_id, start: citation.start, end: citation.end }),
    }, "Read it in the article");
    const item = el("li", { id: `cite-${citation.n}`, class: "citation", tabindex: "-1" },
      el("p", { class: "cite-title" }, el("span", { class: "cite-n" }, `[${citation.n}]`), " ", title),
      meta, context, el("p", { class: "small" }, read));
    fillContext(context, citation, passages);
    return item;
  }

  /** The article's text as far as the passages hold it: overlapping or touching passages of
   * one article joined into {start, end, text} spans of it. */
  function spansOf(docId, passages) {
    const spans = [];
    const own = passages.filter((p) => p.doc_id === docId).sort((a, b) => a.start - b.start);
    for (const p of own) {
      const last = spans[spans.length - 1];
      if (last && p.start <= last.end) {
        if (p.end > last.end) {
          last.text += p.text.slice(last.end - p.start);
          last.end = p.end;
        }
      } else {
        spans.push({ start: p.start, end: p.end, text: p.text });
      }
    }
    return spans;
  }

  /** Shows the quote marked inside the text around it: from the passages when they hold the
   * span, else from the article itself (fetched once per article). */
  function fillContext(target, citation, passages) {
    const holder = spansOf(citation.doc_id, passages)
      .find((span) => span.start <= citation.start && citation.end <= span.end);
    if (holder) {
      markIn(target, holder.text, citation.start - holder.start, citation);
      return;
    }
    if (!documentTexts.has(citation.doc_id)) documentTexts.set(citation.doc_id, getJSON(documentPath(citation.doc_id)));
    documentTexts.get(citation.doc_id)
      .then((doc) => markIn(target, doc.text, citation.start, citation))
      .catch(() => markIn(target, citation.quote, 0, citation)); // the quote alone, still marked
  }

  function markIn(target, text, start, citation) {
    const end = start + (citation.end - citation.start);
    if (text.slice(start, end) !== citation.quote) { // offsets that do not fit: the quote alone
      text = citation.quote;
      start = 0;
    }
    let from = Math.max(0, start - CONTEXT_CHARS);
    let to = Math.min(text.length, start + citation.quote.length + CONTEXT_CHARS);
    // Cut the context at word boundaries.
    if (from > 0) from = Math.min(start, Math.max(from, text.indexOf(" ", from) + 1 || from));
    if (to < text.length) to = Math.max(start + citation.quote.length, text.lastIndexOf(" ", to));
    target.replaceChildren(
      from > 0 ? "…" : "", text.slice(from, start),
      el("mark", {}, citation.quote),
      text.slice(start + citation.quote.length, to), to < text.length ? "…" : "");
  }

  function showPassages(passages) {
    $("passages").replaceChildren(...passages.map((p) => el("li", {},
      el("p", { class: "small" }, el("strong", {}, p.title), " ",
        el("span", { class: "muted" }, ...joined([p.source, `score ${p.score.toFixed(3)}`]))),
      el("p", { class: "small passage-text" }, p.text.length > 320 ? p.text.slice(0, 320) + "…" : p.text))));
    $("passages-summary").textContent = `Passages read (${passages.length})`;
    $("passages-block").hidden = passages.length === 0;
  }

  $("ask-form").addEventListener("submit", (event) => {
    event.preventDefault();
    ask($("question").value, $("generator").value);
  });

  $("stop-button").addEventListener("click", () => {
    if (running) running.abort();
    $("question").focus();
  });

  // -- documents -------------------------------------------------------------------------------

  let listing = { q: "", offset: 0 };

  function documentsHash(q, offset) {
    const params = new URLSearchParams({ documents: "" });
    if (q) params.set("q", q);
    if (offset) params.set("offset", String(offset));
    return "#" + params.toString().replace(/^documents=/, "documents");
  }

  async function listDocuments(q, offset) {
    showView("documents");
    listing = { q, offset };
    $("doc-query").value = q;
    const params = new URLSearchParams({ offset: String(offset), limit: String(PAGE_SIZE) });
    if (q.trim()) params.set("q", q.trim());
    $("doc-count").textContent = "Loading…";
    let page;
    try {
      page = await getJSON(`/documents?${params}`);
    } catch (err) {
      $("doc-count").textContent = "";
      $("doc-list").replaceChildren();
      showError(err);
      return;
    }
    if (listing.q !== q || listing.offset !== offset) return; // a newer listing was asked for
    $("doc-list").replaceChildren(...page.documents.map((doc) => el("li", {},
      el("a", { href: "#" + new URLSearchParams({ document: doc.id }) }, doc.title || doc.id),
      el("span", { class: "muted small" }, ...joined([
        doc.source, doc.published_at && dateElement(doc.published_at), el("span", { class: "id" }, doc.id)])))));
    const shown = page.documents.length;
    const matching = q.trim() ? ` matching “${q.trim()}”` : "";
    if (shown && shown === page.total) { // all on one page
      $("doc-count").textContent = `${shown} ${shown === 1 ? "article" : "articles"}${matching}.`;
    } else if (shown) {
      $("doc-count").textContent = `Articles ${offset + 1}–${offset + shown} of ${page.total}${matching}.`;
    } else {
      $("doc-count").textContent = q.trim() ? `No articles match “${q.trim()}”.` : "No articles here.";
    }
    $("doc-prev").disabled = offset === 0;
    $("doc-next").disabled = offset + shown >= page.total;
  }

  $("doc-search").addEventListener("submit", (event) => {
    event.preventDefault();
    location.hash = documentsHash($("doc-query").value.trim(), 0);
  });
  $("doc-prev").addEventListener("click", () => {
    location.hash = documentsHash(listing.q, Math.max(0, listing.offset - PAGE_SIZE));
  });
  $("doc-next").addEventListener("click", () => {
    location.hash = documentsHash(listing.q, listing.offset + PAGE_SIZE);
  });
  $("doc-back").addEventListener("click", (event) => {
    event.preventDefault();
    location.hash = documentsHash(listing.q, listing.offset);
  });

  let documentShown = null; // the id asked for last: an older, slower reply is not shown

  async function openDocument(id, start, end) {
    documentShown = id;
    showView("document");
    $("doc-title").textContent = "Loading…";
    $("doc-meta").replaceChildren();
    $("doc-text").replaceChildren();
    let doc;
    try {
      doc = await getJSON(documentPath(id));
    } catch (err) {
      if (documentShown !== id) return;
      $("doc-title").textContent = "Article not shown";
      showError(err);
      return;
    }
    if (documentShown !== id) return;
    document.title = `${doc.title || doc.id} · rag`;
    $("doc-title").textContent = doc.title || doc.id;
    const url = webUrl(doc.url);
    $("doc-meta").replaceChildren(...joined([
      doc.source, doc.published_at && dateElement(doc.published_at), el("span", { class: "id" }, doc.id),
      url && el("a", { href: url, rel: "noopener noreferrer" }, "original article"),
    ]));
    const text = doc.text;
    if (start !== null && end !== null && start < end && end <= text.length) {
      const mark = el("mark", { id: "doc-mark", tabindex: "-1" }, text.slice(start, end));
      $("doc-text").replaceChildren(text.slice(0, start), mark, text.slice(end));
      mark.focus();
    } else {
      $("doc-text").textContent = text;
      $("doc-title").focus();
    }
  }

  // -- start -----------------------------------------------------------------------------------

  showKeyState();
  loadGenerators();
  route();
})();
