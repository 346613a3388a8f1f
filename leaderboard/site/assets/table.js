// fxbench leaderboard: sortable and filterable tables, and image switchers. No dependencies, no network.
(function () {
  "use strict";

  // A cell's sort key: data-value (a number, "" = missing) when present, else its text.
  function key(row, col) {
    var cell = row.cells[col];
    if (!cell) return null;
    var v = cell.getAttribute("data-value");
    if (v === null) return cell.textContent.trim().toLowerCase();
    if (v === "") return null;
    return parseFloat(v);
  }

  function compare(a, b, dir) {
    if (a === null && b === null) return 0;
    if (a === null) return 1; // missing values last in both directions
    if (b === null) return -1;
    if (a < b) return -dir;
    if (a > b) return dir;
    return 0;
  }

  function sortBy(table, col, dir) {
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.forEach(function (r, i) { r._pos = i; });
    rows.sort(function (a, b) {
      return compare(key(a, col), key(b, col), dir) || a._pos - b._pos; // stable
    });
    rows.forEach(function (r) { body.appendChild(r); });
    var ths = table.tHead.rows[0].cells;
    for (var i = 0; i < ths.length; i++) {
      ths[i].removeAttribute("aria-sort");
    }
    ths[col].setAttribute("aria-sort", dir > 0 ? "ascending" : "descending");
  }

  function setUpSorting(table) {
    var ths = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(ths, function (th, col) {
      var button = th.querySelector("button") || th;
      button.addEventListener("click", function () {
        // Numbers start high-to-low (scores), text starts A-Z; a second click reverses.
        var first = th.getAttribute("data-type") === "number" ? -1 : 1;
        var current = th.getAttribute("aria-sort");
        var dir = current === null ? first : (current === "ascending" ? -1 : 1);
        sortBy(table, col, dir);
      });
    });
  }

  function setUpFilter(input) {
    input.addEventListener("input", function () {
      var words = input.value.toLowerCase().split(/\s+/).filter(Boolean);
      document.querySelectorAll("table.sortable tbody tr").forEach(function (row) {
        var text = row.textContent.toLowerCase();
        row.hidden = !words.every(function (w) { return text.indexOf(w) >= 0; });
      });
    });
  }

  function setUpSwitch(select) {
    select.addEventListener("change", function () {
      var img = document.getElementById(select.getAttribute("data-target"));
      if (img) img.src = select.value;
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("table.sortable").forEach(setUpSorting);
    var filter = document.getElementById("filter");
    if (filter) setUpFilter(filter);
    document.querySelectorAll("select.image-switch").forEach(setUpSwitch);
  });
})();
