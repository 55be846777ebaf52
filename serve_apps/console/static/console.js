// Live blocks follow an event stream over Server-Sent Events and ask HTMX to refresh
// themselves when something happened. A live block is an element with an id, a
// `data-stream` address (/console/stream: the tenant's task events;
// /console/tasks/{id}/stream: one task's; /console/runs/{id}/stream: one run's) and an
// `hx-trigger` that includes `stream-event`. A burst of events becomes one refresh
// (COALESCE_MS after the first of them, or the block's `data-stream-coalesce-ms`). A block
// with `data-stream-ends="terminal"` stops following after its task's terminal event. Each
// block also polls on its own, slowly, so a browser without EventSource, or whose stream is
// cut or refused, still sees the changes. HTMX swaps the block's outer HTML, so the block is
// looked up by id at every event, and following stops once the page no longer has it (or it
// no longer has a stream: a finished task or run).
(function () {
  "use strict";
  var TASK_KINDS = ["queued", "routed", "started", "output", "retry_scheduled",
                    "attempt_lost", "requeued", "succeeded", "failed", "dead", "cancelled"];
  var RUN_KINDS = ["run_pending", "run_running", "run_waiting", "run_succeeded", "run_failed",
                   "run_cancelled", "run_retried", "step_waiting", "step_ready",
                   "step_running", "step_succeeded", "step_failed", "step_skipped",
                   "step_cancelled", "step_awaiting_approval", "step_timer",
                   "step_approved", "step_rejected"];
  var TERMINAL = ["succeeded", "failed", "dead", "cancelled"];
  var COALESCE_MS = 400;

  function follow(block) {
    var id = block.id;
    var source = new EventSource(block.dataset.stream);
    var ends = block.dataset.streamEnds === "terminal";
    var wait = parseInt(block.dataset.streamCoalesceMs || "", 10) || COALESCE_MS;
    var pending = null;
    var refresh = function () {
      pending = null;
      var current = document.getElementById(id);
      if (current && current.dataset.stream) {
        window.htmx.trigger(current, "stream-event");
      } else {
        source.close();
      }
    };
    var onEvent = function (event) {
      if (pending === null) {
        pending = window.setTimeout(refresh, wait);
      }
      if (ends && TERMINAL.indexOf(event.type) >= 0) {
        source.close();
      }
    };
    TASK_KINDS.concat(RUN_KINDS).forEach(function (kind) {
      source.addEventListener(kind, onEvent);
    });
    window.addEventListener("pagehide", function () { source.close(); });
  }

  function start() {
    if (!window.EventSource || !window.htmx) {
      return;
    }
    var blocks = document.querySelectorAll("[data-stream][id]");
    for (var i = 0; i < blocks.length; i += 1) {
      follow(blocks[i]);
    }
  }

  document.addEventListener("DOMContentLoaded", start);
}());
