// The Business Central panel of the integration card: while a subscription action is under
// way (registering, renewing, unregistering), follow its status and reload when it is done.
(function () {
  "use strict";
  const panel = document.getElementById("bc-panel");
  if (!panel) { return; }
  const working = ["registering", "renewing", "unregistering"];
  const phase = panel.dataset.bcPhase;
  if (working.indexOf(phase) < 0) { return; }
  const started = Date.now();
  function check() {
    // Business Central's handshake and our timeouts end every action within a few minutes.
    if (Date.now() - started > 5 * 60 * 1000) { return; }
    fetch(panel.dataset.bcStatusUrl, { headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) {
        if (data && data.status !== phase) { window.location.reload(); return; }
        setTimeout(check, 1000);
      })
      .catch(function () { setTimeout(check, 3000); });
  }
  setTimeout(check, 1000);
})();
