// memgap report: sort tables by a header click, filter the cgroup table. The page reads fine
// without it.
(function () {
  function key(cell) {
    var v = cell.getAttribute("data-v");
    if (v !== null && v !== "") { var n = Number(v); if (!isNaN(n)) return n; }
    return (cell.textContent || "").trim().toLowerCase();
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    var heads = table.querySelectorAll("thead th");
    heads.forEach(function (th, col) {
      th.tabIndex = 0;
      th.title = "sort";
      var dir = -1;
      function sort() {
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        dir = -dir;
        rows.sort(function (a, b) {
          var x = key(a.cells[col]), y = key(b.cells[col]);
          if (typeof x === typeof y) return (x < y ? -1 : x > y ? 1 : 0) * dir;
          return (typeof x === "number" ? -1 : 1) * dir;
        });
        rows.forEach(function (r) { body.appendChild(r); });
        heads.forEach(function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", dir > 0 ? "ascending" : "descending");
      }
      th.addEventListener("click", sort);
      th.addEventListener("keydown", function (e) { if (e.key === "Enter") sort(); });
    });
  });
  document.querySelectorAll("input[data-filter]").forEach(function (input) {
    var table = document.getElementById(input.getAttribute("data-filter"));
    if (!table) return;
    input.hidden = false;
    input.addEventListener("input", function () {
      var q = input.value.trim().toLowerCase();
      Array.prototype.forEach.call(table.tBodies[0].rows, function (r) {
        r.hidden = q !== "" && (r.textContent || "").toLowerCase().indexOf(q) < 0;
      });
    });
  });
})();
