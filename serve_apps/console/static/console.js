// The task page follows its task's events over Server-Sent Events (the console's
// /console/tasks/{id}/stream, the API's task stream behind the session cookie) and asks HTMX
// to refresh the live block at each one. The block also polls on its own, slowly, so a
// browser without EventSource, or whose stream is cut, still sees the task finish.
(function () {
  "use strict";
  var KINDS = ["queued", "routed", "started", "output", "retry_scheduled", "attempt_lost",
               "requeued", "succeeded", "failed", "dead", "cancelled"];
  var TERMINAL = ["succeeded", "failed", "dead", "cancelled"];

  function follow() {
    var live = document.getElementById("task-live");
    if (!live || !live.dataset.stream || !window.EventSource || !window.htmx) {
      return;
    }
    var source = new EventSource(live.dataset.stream);
    var onEvent = function (event) {
      var current = document.getElementById("task-live");
      if (current && current.dataset.stream) {
        window.htmx.trigger(current, "task-event");
      }
      if (TERMINAL.indexOf(event.type) >= 0) {
        source.close();
      }
    };
    KINDS.forEach(function (kind) { source.addEventListener(kind, onEvent); });
    window.addEventListener("pagehide", function () { source.close(); });
  }

  document.addEventListener("DOMContentLoaded", follow);
}());
