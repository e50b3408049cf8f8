/* obpipe status page: polls /api/status and draws it. Plain JS, no build step.
 *
 * All text from the API goes into the DOM through textContent (never innerHTML), and styles
 * are set through the CSSOM, so the page works under a CSP without 'unsafe-inline'.
 * The admin token lives only in sessionStorage of this tab and is sent only as a Bearer
 * header to /api/tickers and /api/days/<day>/finalize.
 */
(function () {
  "use strict";

  var body = document.body;
  var POLL_MS = Number(body.dataset.pollMs) || 1500;
  var DAYS_POLL_MS = Number(body.dataset.daysPollMs) || 5000;
  var READ_ONLY = body.dataset.readOnly === "true";
  var STALE_AFTER_MS = Math.max(4000, POLL_MS * 3);
  var TOKEN_KEY = "obpipe.adminToken";
  var SVG_NS = "http://www.w3.org/2000/svg";

  var lastOkAt = 0; // Date.now() of the last good answer
  var lastError = "";
  var clockOffsetMs = 0; // server time - browser time
  var depthCode = null;
  var depthTimer = null;
  var lastDays = null; // the last /api/days answer, redrawn when the token changes
  var daysTimer = null;
  var daysBusy = false; // a /api/days request is in flight
  var daysFastUntil = 0; // poll /api/days quickly until then (after a finalize request)

  function $(id) { return document.getElementById(id); }

  function el(tag, opts, children) {
    var node = document.createElement(tag);
    opts = opts || {};
    if (opts.cls) node.className = opts.cls;
    if (opts.text !== undefined && opts.text !== null) node.textContent = String(opts.text);
    if (opts.title) node.title = opts.title;
    if (opts.data) Object.keys(opts.data).forEach(function (k) { node.dataset[k] = opts.data[k]; });
    (children || []).forEach(function (c) { if (c) node.appendChild(c); });
    return node;
  }

  function replace(parent, nodes) {
    while (parent.firstChild) parent.removeChild(parent.firstChild);
    nodes.forEach(function (n) { parent.appendChild(n); });
  }

  function emptyRow(cols, text) {
    var td = el("td", { cls: "muted", text: text });
    td.colSpan = cols;
    return el("tr", {}, [td]);
  }

  /* ---------- formatting ---------- */

  var intFmt = new Intl.NumberFormat("en-US");
  function fmtInt(n) { return n === null || n === undefined ? "—" : intFmt.format(Math.round(n)); }
  function fmtRate(n) {
    if (n === null || n === undefined) return "—";
    return n >= 100 ? intFmt.format(Math.round(n)) : n.toFixed(1);
  }
  function fmtDuration(s) {
    if (s === null || s === undefined || isNaN(s)) return "—";
    var neg = s < 0; s = Math.abs(Math.floor(s));
    var d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60), sec = s % 60;
    var out = d ? d + "d " + h + "h" : h ? h + "h " + m + "m" : m ? m + "m " + sec + "s" : sec + "s";
    return neg ? "-" + out : out;
  }
  function fmtBytes(n) {
    if (n === null || n === undefined) return "—";
    var units = ["B", "KB", "MB", "GB"]; var i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : n) + " " + units[i];
  }
  var timeFmt = new Intl.DateTimeFormat("en-GB", {
    timeZone: "Asia/Jakarta", hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false
  });
  function fmtTime(iso) { return iso ? timeFmt.format(new Date(iso)) : "—"; }
  var dayFmt = new Intl.DateTimeFormat("en-GB", {
    timeZone: "Asia/Jakarta", weekday: "short", hour: "2-digit", minute: "2-digit", hour12: false
  });
  function fmtDayTime(iso) { return iso ? dayFmt.format(new Date(iso)) : "—"; }
  /* [-1, 0, 1, 2, 5] -> "0–2, 5 + gaps" (-1 is the writers' pseudo-partition of the gap stream) */
  function fmtPartitions(parts) {
    var nums = parts.filter(function (p) { return p >= 0; }).sort(function (a, b) { return a - b; });
    var out = [];
    for (var i = 0; i < nums.length; i++) {
      var start = nums[i];
      while (i + 1 < nums.length && nums[i + 1] === nums[i] + 1) i++;
      out.push(start === nums[i] ? String(start) : start + "–" + nums[i]);
    }
    return (out.join(", ") || "none") + (parts.indexOf(-1) >= 0 ? " + gaps" : "");
  }
  function serverNow() { return Date.now() + clockOffsetMs; }

  /* ---------- ingestors ---------- */

  var STATES = {
    connected: ["Connected", "green"],
    connecting: ["Connecting", "amber"],
    reconnecting: ["Reconnecting", "amber"],
    auth_failed: ["Auth failed", "red"],
    stopped: ["Stopped", "gray"]
  };

  /* The raw-frame archive (obpipe replay's source): its size, or its trouble in red. */
  var RAW_STATES = { disk_floor: "stopped: disk floor", error: "cannot write", dropping: "dropping frames" };
  function rawArchive(raw) {
    if (!raw || raw.state === "off") return el("dd", { cls: "muted", text: "off" });
    var text = fmtBytes(raw.bytes) + (raw.dropped ? " · " + fmtInt(raw.dropped) + " lost" : "");
    if (raw.state === "ok") return el("dd", { cls: "raw", text: text, title: fmtInt(raw.frames) + " frames" });
    return el("dd", {
      cls: "raw red", text: (RAW_STATES[raw.state] || raw.state) + " · " + text,
      title: raw.error || "frames not archived are counted; see the alerts", data: { raw: raw.state }
    });
  }

  function ingestorCard(ing) {
    var st = STATES[ing.state] || ["Disconnected", "gray"];
    var badge = el("span", { cls: "badge " + st[1], text: st[0], data: { state: ing.state } });
    badge.setAttribute("data-testid", "badge");
    var head = el("div", { cls: "ing-head" }, [badge, el("strong", { text: ing.id })]);

    var uptime = el("dd", { cls: "tick" });
    if (ing.state === "connected" && ing.connected_since) {
      uptime.dataset.since = ing.connected_since;
    } else {
      uptime.textContent = "—";
    }
    var expiry = el("dd", { cls: "tick" });
    if (ing.token_expires_at) {
      expiry.dataset.until = ing.token_expires_at;
    } else {
      expiry.textContent = "—";
    }
    var facts = el("dl", { cls: "facts" }, [
      el("dt", { text: "Uptime" }), uptime,
      el("dt", { text: "Token expires in" }), expiry
    ].concat(tokenFacts(ing.token), [
      el("dt", { text: "Frames" }), el("dd", { cls: "frames", text: fmtInt(ing.frames) }),
      el("dt", { text: "Frames/s" }), el("dd", { text: fmtRate(ing.frames_per_s) }),
      el("dt", { text: "Reconnects" }), el("dd", { text: fmtInt(ing.reconnects) }),
      el("dt", { text: "Tickers" }), el("dd", { text: String(ing.tickers.length), title: ing.tickers.join(", ") }),
      el("dt", { text: "Last frame" }), el("dd", { text: fmtTime(ing.last_frame_at) }),
      el("dt", { text: "Buffered / overflow" }), el("dd", { text: fmtInt(ing.buffered) + " / " + fmtInt(ing.overflow) }),
      el("dt", { text: "Raw archive" }), rawArchive(ing.raw)
    ]));
    var children = [head, facts];
    var refused = ing.token && (ing.token.state === "refused" || ing.token.state === "expired");
    if (ing.state === "auth_failed" || refused) {
      children.push(el("p", {
        cls: "advice red",
        text: (ing.state === "auth_failed"
          ? "Stockbit refused the token (expired or revoked). "
          : "Stockbit refused the token refresh (" + (ing.token.error || "refused") + "): capture goes " +
            "on until the access token expires. ") +
          "Paste a new token: log in to stockbit.com, copy the tokens (README: Using a real Stockbit " +
          "token) and run `obpipe token set` — ingestors pick it up at once, no restart."
      }));
    }
    if (ing.last_error && ing.state !== "connected") {
      children.push(el("p", { cls: "muted small", text: "Last error: " + ing.last_error }));
    }
    return el("div", { cls: "ingestor", data: { id: ing.id } }, children);
  }

  /* The token store as the ingestor reads it: refresh-token expiry, last and next refresh. */
  function tokenFacts(t) {
    if (!t) return [];
    var refresh = el("dd", { cls: "tick" });
    if (t.refresh_expires_at) refresh.dataset.until = t.refresh_expires_at;
    else refresh.textContent = t.state === "read_only" ? "none (bare token file)" : "—";
    var last = t.refreshed_at ? fmtDayTime(t.refreshed_at) + (t.refreshed_by ? " by " + t.refreshed_by : "") : "—";
    var next = t.state === "ok" || t.state === "failing" ? fmtDayTime(t.next_refresh_at) : t.state;
    var nextCell = el("dd", { text: next, title: t.error || "" });
    if (t.state === "failing" || t.state === "refused" || t.state === "expired") nextCell.classList.add("red");
    return [
      el("dt", { text: "Refresh token expires in" }), refresh,
      el("dt", { text: "Last refresh" }), el("dd", { text: last }),
      el("dt", { text: "Next refresh" }), nextCell
    ];
  }

  function renderIngestors(list) {
    var box = $("ingestors");
    if (!list.length) {
      var badge = el("span", { cls: "badge gray", text: "No ingestor running" });
      badge.setAttribute("data-testid", "badge");
      replace(box, [el("div", { cls: "ingestor" }, [badge])]);
      return;
    }
    replace(box, list.map(ingestorCard));
  }

  /* ticks once a second between polls: uptime counters, countdowns, ages, stale banner */
  function tick() {
    var now = serverNow();
    document.querySelectorAll("[data-since]").forEach(function (node) {
      node.textContent = fmtDuration((now - Date.parse(node.dataset.since)) / 1000);
    });
    document.querySelectorAll("[data-until]").forEach(function (node) {
      var left = (Date.parse(node.dataset.until) - now) / 1000;
      node.textContent = left <= 0 ? "expired" : fmtDuration(left);
      node.classList.toggle("red", left <= 3600);
      node.classList.toggle("amber", left > 3600 && left <= 6 * 3600);
    });
    $("clock").textContent = lastOkAt ? fmtTime(new Date(now).toISOString()) + " WIB" : "—";
    var stale = !lastOkAt || Date.now() - lastOkAt > STALE_AFTER_MS;
    var banner = $("stale-banner");
    if (stale && (lastOkAt || lastError)) {
      var ago = lastOkAt ? "last good data " + fmtDuration((Date.now() - lastOkAt) / 1000) + " ago" : "no data yet";
      $("stale-text").textContent = "the status API is not answering (" + (lastError || "no answer") + "); " + ago + ".";
      banner.hidden = false;
    } else {
      banner.hidden = true;
    }
    body.classList.toggle("is-stale", stale);
  }

  /* ---------- sparkline ---------- */

  function renderSparkline(tp) {
    var svg = $("sparkline");
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    var pts = tp.history || [];
    $("fps-now").textContent = fmtRate(tp.frames_per_s);
    if (pts.length < 2) {
      $("spark-max").textContent = "collecting…";
      return;
    }
    var end = pts[pts.length - 1][0];
    // A fresh web process has only a little history: spread it over the width rather than
    // squeezing it into the right edge of the five-minute frame; the heading says the span.
    var span = Math.min(tp.window_s, Math.max(10, end - pts[0][0]));
    var start = end - span;
    $("spark-span").textContent = span >= 120 ? "last " + Math.round(span / 60) + " min" : "last " + Math.round(span) + " s";
    var max = 1;
    pts.forEach(function (p) { if (p[1] > max) max = p[1]; });
    var coords = pts.filter(function (p) { return p[0] >= start; }).map(function (p) {
      var x = (p[0] - start) / span * 300;
      var y = 58 - p[1] / max * 42; // the top stays clear for the "max" label
      return x.toFixed(1) + "," + y.toFixed(1);
    });
    var area = document.createElementNS(SVG_NS, "polygon");
    var first = coords[0].split(",")[0], last = coords[coords.length - 1].split(",")[0];
    area.setAttribute("points", first + ",60 " + coords.join(" ") + " " + last + ",60");
    area.setAttribute("class", "spark-area");
    var line = document.createElementNS(SVG_NS, "polyline");
    line.setAttribute("points", coords.join(" "));
    line.setAttribute("class", "spark-line");
    svg.appendChild(area);
    svg.appendChild(line);
    $("spark-max").textContent = "max " + fmtRate(max) + "/s";
  }

  /* ---------- tables ---------- */

  function num(text, cls) { return el("td", { cls: "num" + (cls ? " " + cls : ""), text: text }); }

  /* time_covered_pct: share of today's trading so far outside this ticker's gaps (null: no
     trading yet today). Anything short of 100 % is amber, below 99 % red. */
  function fmtCovered(pct) {
    if (pct === null || pct === undefined) return num("—", "covered muted");
    var cell = num(pct.toFixed(pct === 100 ? 0 : 2) + "%",
      "covered" + (pct < 99 ? " red" : (pct < 100 ? " amber" : "")));
    cell.title = "of today's continuous trading so far, outside any gap of this ticker";
    return cell;
  }

  function renderTickers(tickers) {
    var codes = Object.keys(tickers).sort();
    $("ticker-count").textContent = codes.length ? "(" + codes.length + ")" : "";
    if (!codes.length) { replace($("tickers"), [emptyRow(14, "No tickers: add some below.")]); return; }
    replace($("tickers"), codes.map(function (code) {
      var t = tickers[code];
      var codeBtn = el("button", { cls: "link code", text: code, title: "show depth" });
      codeBtn.type = "button";
      codeBtn.dataset.depth = code;
      var age = el("td", { cls: "age " + t.freshness });
      age.textContent = t.age_s === null ? "never" : fmtDuration(t.age_s) + " ago";
      age.title = t.last_update || "";
      var spread = t.spread === null ? "—" : fmtInt(t.spread) + (t.spread_bps !== null ? " (" + t.spread_bps + " bp)" : "");
      // Last price, change against the previous close and the day's volume: the last LivePrice.
      var change = num(t.change === null || t.change === undefined ? "—"
        : (t.change > 0 ? "+" : "") + fmtInt(t.change) +
          (t.change_pct !== null ? " (" + (t.change_pct > 0 ? "+" : "") + t.change_pct.toFixed(2) + "%)" : ""),
        t.change > 0 ? "green" : (t.change < 0 ? "red" : ""));
      if (t.prev_close !== null && t.prev_close !== undefined) { change.title = "previous close " + fmtInt(t.prev_close); }
      var act = el("td", { cls: "act" });
      if (!READ_ONLY && t.desired) {
        var rm = el("button", { cls: "link remove", text: "×", title: "remove " + code });
        rm.type = "button";
        rm.dataset.remove = code;
        rm.setAttribute("aria-label", "remove " + code);
        act.appendChild(rm);
      }
      var row = el("tr", { data: { code: code } }, [
        el("td", {}, [codeBtn, t.desired ? null : el("span", { cls: "muted small", text: " leaving" })]),
        num(fmtInt(t.frames), "frames opt"), num(fmtRate(t.frames_per_s)),
        num(fmtInt(t.trades), "trades opt"), num(fmtRate(t.trades_per_s), "trades-rate"), age,
        fmtCovered(t.time_covered_pct),
        num(t.last_price === null || t.last_price === undefined ? "—" : fmtInt(t.last_price), "last"),
        change, num(t.day_lots === null || t.day_lots === undefined ? "—" : fmtInt(t.day_lots), "opt volume"),
        num(t.best_bid === null ? "—" : fmtInt(t.best_bid)),
        num(t.best_offer === null ? "—" : fmtInt(t.best_offer)),
        num(spread, "opt"), act
      ]);
      if (code === depthCode) row.classList.add("selected");
      return row;
    }));
  }

  function renderWriters(writers) {
    if (!writers.length) { replace($("writers"), [emptyRow(6, "No writer running.")]); return; }
    replace($("writers"), writers.map(function (w) {
      return el("tr", {}, [
        el("td", { text: w.id, title: w.last_error || "" }),
        el("td", { cls: "wrap", text: fmtPartitions(w.partitions) }),
        num(fmtInt(w.rows)), num(fmtRate(w.rows_per_s)), num(fmtInt(w.lag)),
        num(w.lag_seconds === null ? "—" : w.lag_seconds.toFixed(1))
      ]);
    }));
  }

  function renderGaps(gaps) {
    if (!gaps.length) { replace($("gaps"), [emptyRow(6, "No gaps today.")]); return; }
    replace($("gaps"), gaps.map(function (g) {
      return el("tr", {}, [
        el("td", { text: fmtTime(g.start) }), el("td", { cls: "opt", text: fmtTime(g.end) }),
        num(fmtDuration(g.duration_s)), el("td", { text: g.cause, title: g.detail || "" }),
        el("td", { cls: "wrap", text: g.tickers.join(", ") || "all" }),
        el("td", { cls: "opt", text: g.ingestor })
      ]);
    }));
  }

  function renderFiles(files, day) {
    $("files-day").textContent = day;
    if (!files.length) { replace($("files"), [emptyRow(3, "No rows written today.")]); return; }
    replace($("files"), files.map(function (f) {
      return el("tr", {}, [el("td", { text: f.name }), num(fmtInt(f.rows)), num(fmtBytes(f.bytes))]);
    }));
  }

  /* ---------- alerts ---------- */

  var DELIVERY = {
    sent: ["sent", "green"],
    pending: ["sending", "amber"],
    retrying: ["retrying", "amber"],
    held: ["held (rate limit)", "amber"],
    partial: ["partly sent", "amber"],
    failed: ["failed", "red"],
    dropped: ["dropped", "red"],
    unsent: ["not sent", "gray"],
    coalesced: ["in a digest", "gray"]
  };
  var KINDS = { start: "started", clear: "resolved", reminder: "reminder", event: "event", digest: "digest" };

  function renderAlerts(a) {
    var m = a.monitor;
    var sender = $("alerts-sender");
    if (!m) {
      sender.textContent = "· no alert monitor running (it runs in obpipe jobs)";
    } else if (!m.destinations) {
      sender.textContent = "· not sent: no ALERT_URLS";
    } else {
      sender.textContent = "· sent to " + m.destinations + (m.destinations === 1 ? " destination" : " destinations") +
        " (" + m.services.join(", ") + ") · " + fmtInt(a.sent) + " sent, " + fmtInt(a.failed) + " failed";
    }
    sender.classList.toggle("red", !m);
    if (!a.active.length) {
      replace($("alerts-active"), [el("li", { cls: "muted", text: "Nothing wrong now." })]);
    } else {
      replace($("alerts-active"), a.active.map(function (c) {
        var badge = el("span", { cls: "badge " + (c.severity === "critical" ? "red" : "amber"), text: c.severity });
        var since = el("span", { cls: "muted small tick" });
        since.dataset.since = c.since;
        return el("li", { title: c.detail || "", data: { condition: c.id } }, [
          badge, el("strong", { text: c.title }), el("span", { cls: "muted small", text: "for" }), since
        ]);
      }));
    }
    if (!a.recent.length) { replace($("alerts"), [emptyRow(4, "No alerts yet.")]); return; }
    replace($("alerts"), a.recent.map(function (r) {
      var d = r.delivery || {};
      var st = DELIVERY[d.state] || [d.state || "unknown", "gray"];
      var info = [d.detail, d.attempts ? d.attempts + " attempt(s)" : "",
        (d.sent_to || []).length ? "sent to " + d.sent_to.join(", ") : "",
        (d.failed_to || []).length ? "failed: " + d.failed_to.join(", ") : ""].filter(Boolean).join("; ");
      var sev = r.kind === "clear" ? "green" : r.severity === "critical" ? "red" : r.severity === "info" ? "gray" : "amber";
      return el("tr", { data: { key: r.key } }, [
        el("td", { text: fmtDayTime(r.at) }),
        el("td", { cls: "wrap", title: r.detail || "" }, [
          el("span", { cls: sev, text: r.kind === "clear" ? "✓ " : "● " }), el("span", { text: r.title })
        ]),
        el("td", { cls: "opt", text: KINDS[r.kind] || r.kind }),
        el("td", {}, [el("span", { cls: "badge " + st[1], text: st[0], title: info, data: { state: d.state || "" } })])
      ]);
    }));
  }

  function render(s) {
    renderIngestors(s.ingestors);
    renderSparkline(s.throughput);
    renderTickers(s.tickers);
    renderWriters(s.writers);
    renderGaps(s.gaps);
    renderFiles(s.files, s.day);
    if (s.alerts) renderAlerts(s.alerts);
    $("rows-now").textContent = fmtRate(s.throughput.rows_per_s);
    $("backlog").textContent = fmtInt(s.streams.backlog);
    $("retained").textContent = fmtInt(s.streams.length);
    $("dead-letters").textContent = fmtInt(s.dead_letters);
    $("dead-letters").classList.toggle("red", s.dead_letters > 0);
    $("gaps-count").textContent = fmtInt(s.gaps_today);
    var m = s.market;
    var market = $("market");
    market.textContent = m.open
      ? "IDX open · " + m.session + " until " + fmtDayTime(m.next_change_at).split(" ").pop()
      : "IDX closed · opens " + fmtDayTime(m.next_change_at);
    market.className = "pill " + (m.open ? "green" : "gray");
  }

  /* ---------- polling ---------- */

  function poll() {
    fetch("/api/status", { cache: "no-store", headers: { Accept: "application/json" } })
      .then(function (r) {
        return r.json().catch(function () { return {}; }).then(function (data) {
          if (!r.ok) throw new Error(data.error || "HTTP " + r.status);
          return data;
        });
      })
      .then(function (data) {
        lastOkAt = Date.now();
        lastError = "";
        clockOffsetMs = Date.parse(data.now) - Date.now();
        render(data);
        $("last-poll").textContent = "updated " + fmtTime(data.now);
      })
      .catch(function (err) { lastError = err && err.message ? err.message : String(err); })
      .then(function () { tick(); setTimeout(poll, POLL_MS); });
  }

  /* ---------- days ---------- */

  var JOB_STATES = {
    none: ["no job", "gray"],
    scheduled: ["scheduled", "gray"],
    queued: ["queued", "amber"],
    started: ["running", "amber"],
    deferred: ["deferred", "amber"],
    finished: ["finished", "green"],
    failed: ["failed", "red"],
    stopped: ["stopped", "red"],
    canceled: ["canceled", "gray"]
  };
  var BUSY_STATES = ["queued", "started"];

  /* Volume coverage: captured trades' lots / the exchange's (LivePrice), flagged under the
     floor (99.9 %). Shown rounded down, so a flagged day never reads "99.9 %". */
  function coverageBadge(m) {
    var c = m && m.coverage;
    if (!c) return el("span", { cls: "muted", text: "—" });
    if (c.pct === "unknown") {
      return el("span", {
        cls: "muted", text: "unknown",
        title: "no LivePrice figures, or the day was captured without trades"
      });
    }
    var text = (Math.floor(c.pct * 100) / 100).toFixed(2) + " %";
    if (!c.flagged) {
      return el("span", { cls: "badge green", text: text, title: "traded volume captured (LivePrice)" });
    }
    var who = c.below_count ? c.below_count + " ticker(s) under " + c.floor + " %: " +
      c.below.join(", ") + (c.below_count > c.below.length ? ", …" : "") : "under " + c.floor + " %";
    return el("span", { cls: "badge amber", text: text, title: who, data: { flag: "coverage" } });
  }

  /* The daily recap (16:45 WIB, before the manifest): files, gaps, coverage; problems on hover. */
  function recapLine(r) {
    var parts = [fmtInt(r.files) + " files", fmtInt(r.gaps) + (r.gaps === 1 ? " gap" : " gaps")];
    if (r.gaps) parts[1] += " (" + fmtDuration(r.gap_seconds) + ")";
    if (r.time_coverage_pct !== null && r.time_coverage_pct !== undefined) parts.push(r.time_coverage_pct + " % of trading");
    var line = el("div", {
      cls: "muted small recap" + (r.problems.length ? " amber" : ""),
      text: "recap: " + parts.join(" · "),
      title: r.problems.length ? "Top problems:\n" + r.problems.join("\n") : "no problems"
    });
    line.setAttribute("data-testid", "recap");
    return line;
  }

  function dayRow(d) {
    var m = d.manifest;
    var dayCell = el("td", { cls: "day" });
    if (m || d.manifest_error) {
      var link = el("a", { text: d.day, title: "manifest JSON" });
      link.href = "/api/days/" + encodeURIComponent(d.day);
      dayCell.appendChild(link);
    } else {
      dayCell.textContent = d.day;
    }
    if (d.recap) dayCell.appendChild(recapLine(d.recap));
    var verified;
    if (d.manifest_error) {
      verified = el("span", { cls: "badge red", text: "unreadable", title: d.manifest_error });
    } else if (!m) {
      verified = el("span", { cls: "muted", text: "not yet" });
    } else if (m.ok) {
      verified = el("span", { cls: "badge green", text: "ok" });
    } else {
      verified = el("span", {
        cls: "badge red",
        text: m.problems + (m.problems === 1 ? " problem" : " problems"),
        title: m.first_problems.join("\n")
      });
    }
    var st = JOB_STATES[d.job.state] || [d.job.state, "gray"];
    var job = el("span", { cls: "badge " + st[1], text: st[0], data: { state: d.job.state } });
    job.title = d.job.id;
    var jobCell = el("td", { cls: "job" }, [el("div", { cls: "job-cell" }, [job])]);
    var actions = jobCell.firstChild;
    if (!READ_ONLY && token()) {
      if (d.finalizable) {
        var again = !!(m || d.manifest_error) || d.job.state === "finished" || d.job.state === "failed";
        var btn = el("button", { cls: "small-btn", text: again ? "Run again" : "Finalize" });
        btn.type = "button";
        btn.dataset.finalize = d.day;
        btn.title = "run finalize_day(" + d.day + ") now";
        actions.appendChild(btn);
      } else if (BUSY_STATES.indexOf(d.job.state) < 0) {
        actions.appendChild(el("span", { cls: "muted small", text: "day not over" }));
      }
    }
    return el("tr", { data: { day: d.day } }, [
      dayCell,
      el("td", {}, [verified]),
      el("td", { cls: "num coverage" }, [coverageBadge(m)]),
      num(m ? fmtInt(m.files) : "—", "opt"),
      num(m ? fmtInt(m.rows) : "—"),
      num(m ? fmtBytes(m.bytes) : "—", "opt"),
      num(m ? fmtInt(m.tickers) : "—", "opt"),
      num(m ? fmtInt(m.gaps) : "—", "opt"),
      el("td", { cls: "opt", text: m && m.compressed ? "gz" : "" }),
      jobCell
    ]);
  }

  function renderDays(doc) {
    lastDays = doc;
    var days = doc.days;
    $("days-count").textContent = doc.total > days.length
      ? "(newest " + days.length + " of " + doc.total + ")"
      : days.length ? "(" + days.length + ")" : "";
    $("days-hint").hidden = READ_ONLY || !!token() || !days.length;
    if (!days.length) {
      replace($("days"), [emptyRow(10, "No finished or scheduled days yet.")]);
      return;
    }
    replace($("days"), days.map(dayRow));
  }

  function pollDays() {
    clearTimeout(daysTimer);
    if (daysBusy) return;
    daysBusy = true;
    var busy = false;
    fetch("/api/days", { cache: "no-store", headers: { Accept: "application/json" } })
      .then(function (r) {
        return r.json().catch(function () { return {}; }).then(function (d) {
          if (!r.ok) throw new Error(d.error || "HTTP " + r.status);
          return d;
        });
      })
      .then(function (d) {
        renderDays(d);
        busy = d.days.some(function (x) { return BUSY_STATES.indexOf(x.job.state) >= 0; });
      })
      .catch(function () { /* the stale banner reports outages; keep the last table */ })
      .then(function () {
        daysBusy = false;
        var fast = busy || Date.now() < daysFastUntil;
        daysTimer = setTimeout(pollDays, fast ? POLL_MS : DAYS_POLL_MS);
      });
  }

  function sayDays(text, kind) {
    var msg = $("days-msg");
    msg.textContent = text;
    msg.className = "msg " + (kind || "");
  }

  function finalizeDay(day, button) {
    if (!token()) { sayDays("Enter the admin token under Control first.", "red"); return; }
    button.disabled = true;
    fetch("/api/days/" + encodeURIComponent(day) + "/finalize", {
      method: "POST",
      cache: "no-store",
      headers: { Authorization: "Bearer " + token() }
    }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (d) {
        if (r.status === 401) {
          setToken("");
          sayDays("Admin token refused: " + (d.error || "unauthorized") + ". Enter it again under Control.", "red");
        } else if (!r.ok) {
          sayDays(d.error || "HTTP " + r.status, "red");
        } else {
          sayDays(d.message || "queued", "green");
        }
      });
    }).catch(function (err) {
      sayDays("Could not reach the server: " + err.message, "red");
    }).then(function () {
      button.disabled = false;
      daysFastUntil = Date.now() + 30000;
      pollDays();
    });
  }

  /* ---------- depth ladder ---------- */

  function ladderSide(side, name, max) {
    var rows = [];
    var levels = side ? side.levels : [];
    for (var i = 0; i < 10; i++) {
      var lv = levels[i];
      var bar = el("div", { cls: "bar " + name });
      var row;
      if (lv) {
        bar.style.width = (max ? lv.lots / max * 100 : 0).toFixed(1) + "%";
        row = el("div", { cls: "lvl " + name }, [
          el("div", { cls: "bar-track" }, [bar]),
          el("span", { cls: "price", text: fmtInt(lv.price) }),
          el("span", { cls: "lots", text: fmtInt(lv.lots) }),
          el("span", { cls: "orders muted", text: fmtInt(lv.orders) + " ord" })
        ]);
      } else {
        row = el("div", { cls: "lvl empty " + name }, [el("span", { cls: "muted", text: "·" })]);
      }
      rows.push(row);
    }
    return rows;
  }

  function renderDepth(d) {
    var max = 0;
    [d.bid, d.offer].forEach(function (side) {
      (side ? side.levels : []).forEach(function (lv) { if (lv.lots > max) max = lv.lots; });
    });
    var bidCol = el("div", { cls: "side bid" }, [el("h3", { text: "Bid" })].concat(ladderSide(d.bid, "bid", max)));
    var offCol = el("div", { cls: "side offer" }, [el("h3", { text: "Offer" })].concat(ladderSide(d.offer, "offer", max)));
    var nodes = [bidCol, offCol];
    if (!d.bid && !d.offer) {
      nodes = [el("p", { cls: "muted", text: "No book of " + d.code + " received yet (it may be quiet, or not streamed yet)." })];
    }
    replace($("depth"), nodes);
    var when = d.bid && d.offer ? (d.bid.received > d.offer.received ? d.bid.received : d.offer.received) : (d.bid || d.offer || {}).received;
    $("depth-meta").textContent = when ? "as of " + fmtTime(when) + " · lots per level" : "";
  }

  function loadDepth() {
    if (!depthCode) return;
    var code = depthCode;
    fetch("/api/depth/" + encodeURIComponent(code), { cache: "no-store" })
      .then(function (r) { return r.json().then(function (d) { if (!r.ok) throw new Error(d.error); return d; }); })
      .then(function (d) { if (code === depthCode) renderDepth(d); })
      .catch(function (err) { if (code === depthCode) replace($("depth"), [el("p", { cls: "muted", text: err.message })]); })
      .then(function () {
        if (code === depthCode) depthTimer = setTimeout(loadDepth, POLL_MS);
      });
  }

  function openDepth(code) {
    depthCode = code;
    clearTimeout(depthTimer);
    $("depth-code").textContent = code;
    $("depth-meta").textContent = "";
    replace($("depth"), [el("p", { cls: "muted", text: "loading…" })]);
    $("depth-card").hidden = false;
    document.querySelectorAll("#tickers tr").forEach(function (tr) {
      tr.classList.toggle("selected", tr.dataset.code === code);
    });
    loadDepth();
  }

  function closeDepth() {
    depthCode = null;
    clearTimeout(depthTimer);
    $("depth-card").hidden = true;
  }

  /* ---------- control ---------- */

  function token() { try { return sessionStorage.getItem(TOKEN_KEY) || ""; } catch (e) { return ""; } }
  function setToken(value) {
    try {
      if (value) sessionStorage.setItem(TOKEN_KEY, value); else sessionStorage.removeItem(TOKEN_KEY);
    } catch (e) { /* storage disabled: the token is then asked for again */ }
    showTokenState();
  }
  function showTokenState() {
    var has = !!token();
    $("token-form").hidden = has;
    $("token-saved").hidden = !has;
    if (lastDays) renderDays(lastDays);
  }
  function say(text, kind) {
    var msg = $("control-msg");
    msg.textContent = text;
    msg.className = "msg " + (kind || "");
  }

  function changeTickers(payload) {
    if (!token()) {
      say("Enter the admin token first (WEB_ADMIN_TOKEN of the web process).", "red");
      $("token-input").focus();
      return Promise.resolve(false);
    }
    return fetch("/api/tickers", {
      method: "POST",
      cache: "no-store",
      headers: { "Content-Type": "application/json", Authorization: "Bearer " + token() },
      body: JSON.stringify(payload)
    }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (d) {
        if (r.status === 401) {
          setToken("");
          say("Admin token refused: " + (d.error || "unauthorized") + ". Enter it again.", "red");
          return false;
        }
        if (!r.ok) { say(d.error || "HTTP " + r.status, "red"); return false; }
        say(d.message || "done", "green");
        return true;
      });
    }).catch(function (err) { say("Could not reach the server: " + err.message, "red"); return false; });
  }

  function setupControl() {
    if (READ_ONLY) { $("control-readonly").hidden = false; return; }
    $("control").hidden = false;
    showTokenState();
    $("token-form").addEventListener("submit", function (ev) {
      ev.preventDefault();
      var value = $("token-input").value.trim();
      $("token-input").value = "";
      if (!value) { say("The token is empty.", "red"); return; }
      setToken(value);
      say("Token kept for this tab; it is checked on the first change.", "");
    });
    $("token-forget").addEventListener("click", function () { setToken(""); say("Token forgotten.", ""); });
    $("add-form").addEventListener("submit", function (ev) {
      ev.preventDefault();
      var codes = $("add-input").value.split(/[\s,]+/).filter(Boolean);
      if (!codes.length) { say("Type one or more ticker codes, e.g. BBCA, TLKM.", "red"); return; }
      changeTickers({ add: codes }).then(function (ok) { if (ok) $("add-input").value = ""; });
    });
  }

  document.addEventListener("click", function (ev) {
    var target = ev.target;
    if (!(target instanceof HTMLElement)) return;
    if (target.dataset.depth) { openDepth(target.dataset.depth); return; }
    if (target.dataset.remove) { changeTickers({ remove: [target.dataset.remove] }); return; }
    if (target.dataset.finalize) { finalizeDay(target.dataset.finalize, target); return; }
    if (target.id === "depth-close") closeDepth();
  });

  setupControl();
  setInterval(tick, 1000);
  poll();
  pollDays();
})();
