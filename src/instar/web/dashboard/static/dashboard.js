// Instar dashboard: the theme switch, and the live parts of the pages, fed by
// one Server-Sent Events stream of timeline events (/ui/events). Nothing here
// polls: a page asks the server again at most once per burst of events.
// Text from the server is only ever set with textContent, never as HTML.
"use strict";

(function () {
  const THEMES = ["auto", "light", "dark"];
  const QUIET_MS = 250; // a refresh waits this long for the rest of a burst
  const MOST_EVERY_MS = 1000; // and comes at most this often while jobs move
  const KEPT = 200; // transitions listed on the overview

  // -- theme -------------------------------------------------------------------
  function applyTheme(theme) {
    if (theme === "auto") delete document.documentElement.dataset.theme;
    else document.documentElement.dataset.theme = theme;
    const button = document.getElementById("theme-toggle");
    if (button) button.textContent = "Theme: " + theme;
  }
  let theme = "auto";
  try { theme = localStorage.getItem("instar-theme") || "auto"; } catch (e) { /* private mode */ }
  if (!THEMES.includes(theme)) theme = "auto";
  applyTheme(theme);

  // -- a refresh at most once per burst ----------------------------------------------
  function perBurst(action) {
    let timer = null;
    let last = 0;
    return function () {
      if (timer !== null) return; // the refresh already asked for covers this event
      const wait = Math.max(QUIET_MS, MOST_EVERY_MS - (Date.now() - last));
      timer = setTimeout(function () {
        timer = null;
        last = Date.now();
        action();
      }, wait);
    };
  }

  function setStatus(text, kind) {
    const status = document.getElementById("live-status");
    if (!status) return;
    status.textContent = text;
    status.className = "status " + kind;
  }

  function formatCount(n) { return Number(n).toLocaleString("en-US"); }

  // -- the overview ------------------------------------------------------------------
  function overview() {
    const counts = {};
    document.querySelectorAll("svg.lifecycle text.count").forEach(function (node) {
      counts[node.id.slice("count-".length)] = parseInt(node.textContent.replace(/,/g, ""), 10) || 0;
    });
    function show(state) {
      const node = document.getElementById("count-" + state);
      if (node) node.textContent = formatCount(Math.max(counts[state], 0));
    }
    const refresh = perBurst(function () {
      fetch("/ui/counts", { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (body) {
          if (!body) return;
          Object.keys(body.totals).forEach(function (state) {
            counts[state] = body.totals[state];
            show(state);
          });
          queueTable(body.queues);
        })
        .catch(function () { /* the stream's status says the server is away */ });
    });
    function queueTable(queues) {
      const table = document.getElementById("queue-counts");
      if (!table) return;
      const states = Array.from(table.tHead.rows[0].cells).slice(1).map(function (c) { return c.textContent; });
      const body = document.createElement("tbody");
      Object.keys(queues).forEach(function (queue) {
        const row = body.insertRow();
        const head = document.createElement("th");
        head.scope = "row";
        const link = document.createElement("a");
        link.href = "/jobs?queue=" + encodeURIComponent(queue);
        link.textContent = queue;
        head.appendChild(link);
        row.appendChild(head);
        states.forEach(function (state) {
          row.insertCell().textContent = formatCount(queues[queue][state] || 0);
        });
      });
      table.replaceChild(body, table.tBodies[0]);
    }
    const activity = document.getElementById("activity");
    return function (event) {
      if (event.from_state !== event.to_state) {
        if (event.from_state !== null && event.from_state in counts) { counts[event.from_state] -= 1; show(event.from_state); }
        if (event.to_state in counts) { counts[event.to_state] += 1; show(event.to_state); }
        if (event.from_state !== null) {
          const edge = document.getElementById("edge-" + event.from_state + "-" + event.to_state);
          if (edge) {
            edge.classList.remove("flash");
            void edge.getBoundingClientRect(); // restart the flash
            edge.classList.add("flash");
            setTimeout(function () { edge.classList.remove("flash"); }, 60);
          }
        }
        refresh();
      }
      if (activity) {
        const item = document.createElement("li");
        item.dataset.event = event.id;
        const link = document.createElement("a");
        link.href = "/jobs/" + event.job_id;
        link.textContent = "job " + event.job_id;
        const when = new Date(event.at).toISOString().slice(11, 19);
        const move = event.from_state === event.to_state
          ? "note in " + event.to_state
          : (event.from_state || "new") + " → " + event.to_state;
        item.append(when + " ", link, " " + move + " (" + event.trigger + (event.actor ? ", " + event.actor : "") + ")");
        activity.prepend(item);
        while (activity.children.length > KEPT) activity.lastElementChild.remove();
      }
    };
  }

  // -- one job -----------------------------------------------------------------------
  function jobPage(jobId) {
    const refresh = perBurst(function () {
      if (window.htmx) {
        htmx.ajax("GET", "/jobs/" + jobId, { target: "#job-live", swap: "outerHTML" });
      }
    });
    return function (event) {
      if (String(event.job_id) === jobId) refresh();
    };
  }

  // -- the stream --------------------------------------------------------------------
  function follow(url, onEvent) {
    const seen = new Set();
    let lastId = null;
    let source = null;
    function connect(target) {
      source = new EventSource(target, { withCredentials: true });
      source.onopen = function () { setStatus("live", "live"); };
      source.onerror = function () {
        setStatus("reconnecting…", "reconnecting");
        if (source.readyState === EventSource.CLOSED) {
          // Refused: a session that ended goes to sign in; otherwise (the
          // server restarted, or said 503) a new stream starts after the last
          // event this page got.
          setTimeout(function () {
            fetch("/ui/counts", { credentials: "same-origin" }).then(function (r) {
              if (r.status === 401) {
                const here = window.location.pathname + window.location.search;
                window.location.assign("/login?next=" + encodeURIComponent(here));
              } else {
                connect(resumeUrl());
              }
            }, function () { connect(resumeUrl()); });
          }, 1000);
        }
      };
      source.addEventListener("transition", function (message) {
        const id = Number(message.lastEventId);
        if (seen.has(id)) return; // every event once, across reconnections
        seen.add(id);
        lastId = id;
        let event;
        try { event = JSON.parse(message.data); } catch (e) { return; }
        onEvent(event);
      });
      source.addEventListener("gap", function () {
        const note = document.getElementById("stream-note");
        if (note) {
          note.textContent = "Some events were pruned while this page was away; reload to see the current state.";
          note.hidden = false;
        }
      });
      source.addEventListener("overflow", function () {
        source.close();
        setStatus("reconnecting…", "reconnecting");
        setTimeout(function () { connect(resumeUrl()); }, 200);
      });
    }
    function resumeUrl() {
      if (lastId === null) return url;
      const next = new URL(url, window.location.href);
      next.searchParams.set("after", String(lastId));
      return next.pathname + next.search;
    }
    connect(url);
  }

  document.addEventListener("DOMContentLoaded", function () {
    const button = document.getElementById("theme-toggle");
    if (button) {
      button.addEventListener("click", function () {
        theme = THEMES[(THEMES.indexOf(theme) + 1) % THEMES.length];
        try { localStorage.setItem("instar-theme", theme); } catch (e) { /* private mode */ }
        applyTheme(theme);
      });
      applyTheme(theme);
    }
    // A refused action answers 409 (or 403, 404) with the part to show: swap it in.
    document.body.addEventListener("htmx:beforeSwap", function (event) {
      const status = event.detail.xhr.status;
      if (status === 400 || status === 403 || status === 404 || status === 409) {
        event.detail.shouldSwap = true;
        event.detail.isError = false;
      }
    });
    const url = document.body.dataset.stream;
    if (!url) return;
    const handlers = [];
    if (document.body.dataset.page === "overview") handlers.push(overview());
    if (document.body.dataset.job) handlers.push(jobPage(document.body.dataset.job));
    follow(url, function (event) { handlers.forEach(function (h) { h(event); }); });
  });
})();
