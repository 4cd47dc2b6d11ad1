// Live updates for the console: follows /api/v1/events/stream and updates job rows, the job log
// and the event list in place. Pages work without it (they are server-rendered).
(function () {
  "use strict";

  function rowFor(job) {
    var row = document.querySelector('tr[data-job-id="' + job.id + '"]');
    if (row) return row;
    var body = document.getElementById("job-rows");
    if (!body || document.getElementById("job-log")) return null;  // a job page shows one job only
    var empty = body.querySelector("tr.empty");
    if (empty) empty.remove();
    row = document.createElement("tr");
    row.dataset.jobId = job.id;
    var link = document.createElement("a");
    link.href = "/jobs/" + encodeURIComponent(job.id);
    link.textContent = job.title || job.kind;
    var cells = [link, job.node, "", null, ""];
    cells.forEach(function (content, index) {
      var cell = document.createElement("td");
      if (index === 2) cell.className = "job-state";
      if (index === 4) cell.className = "job-description";
      if (index === 3) {
        cell.innerHTML = '<div class="bar" role="progressbar" aria-valuemin="0" aria-valuemax="100">' +
          '<div class="fill"></div></div> <span class="job-progress"></span>';
      } else if (content instanceof Node) {
        cell.appendChild(content);
      } else {
        cell.textContent = content;
      }
      row.appendChild(cell);
    });
    body.insertBefore(row, body.firstChild);
    return row;
  }

  function updateJob(job) {
    var row = rowFor(job);
    if (row) {
      row.className = "state-" + job.state;
      row.querySelector(".job-state").textContent = job.state;
      row.querySelector(".fill").style.width = job.progress + "%";
      row.querySelector(".bar").setAttribute("aria-valuenow", job.progress);
      row.querySelector(".job-progress").textContent = job.progress + "%";
      row.querySelector(".job-description").textContent = job.error || job.description || "";
    }
    var log = document.getElementById("job-log");
    var ended = ["success", "failed", "aborted"].indexOf(job.state) >= 0;
    if (log && log.dataset.jobId === job.id && ended && log.dataset.state !== job.state) {
      // The job page was rendered before the end: show the whole log, the result, no Abort button.
      window.location.reload();
      return;
    }
    if (log && log.dataset.jobId === job.id && job.last_log) {
      var last = log.lastElementChild;
      if (!last || last.textContent !== job.last_log) {
        var item = document.createElement("li");
        item.textContent = job.last_log;
        log.appendChild(item);
      }
    }
  }

  function addEvent(event) {
    var list = document.getElementById("event-list");
    if (!list) return;
    var empty = list.querySelector("li.empty");
    if (empty) empty.remove();
    var item = document.createElement("li");
    item.className = "sev-" + event.severity;
    item.textContent = event.message + " (" + event.node + ")";
    list.insertBefore(item, list.firstChild);
  }

  // The server says this page may have missed changes (it keeps only recent ones): reload it, but
  // not twice within a minute (a page that keeps failing to catch up then stays as it is).
  function reloadPage() {
    var last = Number(window.sessionStorage.getItem("cairn-stream-reload") || 0);
    if (Date.now() - last < 60000) return;
    window.sessionStorage.setItem("cairn-stream-reload", String(Date.now()));
    window.location.reload();
  }

  if (!window.EventSource || !document.querySelector('meta[name="csrf-token"]').content) return;
  // The page's store revision: the stream starts right after what the page shows. On reconnect the
  // browser sends the id of the last message it got (Last-Event-ID), and the server replays the rest.
  var since = document.querySelector('meta[name="store-revision"]').content;
  var source = new EventSource("/api/v1/events/stream" + (since && since !== "0" ? "?since=" + since : ""));
  source.addEventListener("job", function (e) { updateJob(JSON.parse(e.data)); });
  source.addEventListener("event", function (e) { addEvent(JSON.parse(e.data)); });
  source.addEventListener("reload", reloadPage);
})();
