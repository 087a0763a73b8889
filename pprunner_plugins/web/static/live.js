// pprunner web: swap in the page's live part every data-interval-ms, no build step.
// The server answers the page's own address with only that part when it sees the
// X-Pprunner-Live header. A refresh waits while a form in it has the focus, keeps
// the tracebacks that are open, and a failed one shows why and tries again.
(function () {
  "use strict";
  var live = document.getElementById("live");
  var stale = document.getElementById("stale");
  var interval = parseInt(live.dataset.intervalMs, 10) || 2000;

  function openDetails() {
    return Array.prototype.map.call(live.querySelectorAll("details[open]"),
                                    function (d) { return d.id; });
  }

  function refresh() {
    if (live.contains(document.activeElement) && document.activeElement.form) {
      return setTimeout(refresh, interval);
    }
    fetch(location.href, {headers: {"X-Pprunner-Live": "1"}, credentials: "same-origin"})
      .then(function (response) {
        return response.text().then(function (text) {
          if (!response.ok) { throw new Error(text); }
          return text;
        });
      })
      .then(function (html) {
        var wasOpen = openDetails();
        live.innerHTML = html;
        wasOpen.forEach(function (id) {
          var details = id && document.getElementById(id);
          if (details) { details.open = true; }
        });
        stale.className = "";
      })
      .catch(function (error) {
        stale.textContent = "not refreshed: " + error.message;
        stale.className = "shown";
      })
      .then(function () { setTimeout(refresh, interval); });
  }

  setTimeout(refresh, interval);
}());
