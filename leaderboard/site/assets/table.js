// fxbench leaderboard: sortable and filterable tables, a column chooser, image switchers.
// No dependencies, no network; works from file://.
(function () {
  "use strict";

  var STORE = "fxbench.columns"; // localStorage: {column key: shown?}, shared by every board

  // A cell's sort key: data-value (a number, "" = missing) when present, else its text. Sorting never reads
  // a number cell's label ("0.577 [0.53, 0.62]").
  function key(row, col) {
    var cell = row.cells[col];
    if (!cell) return null;
    var v = cell.getAttribute("data-value");
    if (v === null) return cell.textContent.trim().toLowerCase();
    if (v === "") return null;
    var x = parseFloat(v);
    return isNaN(x) ? null : x;
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
    rows.sort(function (a, b) {
      // ties keep the page's own order (the ranking), whatever was clicked before
      return compare(key(a, col), key(b, col), dir) || a._pos - b._pos;
    });
    rows.forEach(function (r) { body.appendChild(r); });
    var ths = table.tHead.rows[0].cells;
    for (var i = 0; i < ths.length; i++) {
      ths[i].removeAttribute("aria-sort");
    }
    ths[col].setAttribute("aria-sort", dir > 0 ? "ascending" : "descending");
  }

  function setUpSorting(table) {
    Array.prototype.forEach.call(table.tBodies[0].rows, function (r, i) { r._pos = i; });
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

  // The message under a table that a filter emptied.
  function noMatch(table) {
    var next = table.nextElementSibling;
    if (next && next.classList.contains("no-match")) return next;
    var p = document.createElement("p");
    p.className = "no-match";
    p.setAttribute("role", "status");
    p.hidden = true;
    table.parentNode.insertBefore(p, table.nextSibling);
    return p;
  }

  // The selects beside the text filter (index page): training kind, size band, architecture.
  function selected(id) {
    var e = document.getElementById(id);
    return e ? e.value : "";
  }

  function passesSelects(row) {
    var kind = selected("filter-training");
    if (kind && row.getAttribute("data-training") !== kind) return false;
    var arch = selected("filter-arch");
    if (arch && row.getAttribute("data-arch") !== arch) return false;
    var band = selected("filter-size");
    if (band) {
      var n = parseFloat(row.getAttribute("data-params"));
      var lim = band.split("-").map(parseFloat);
      if (isNaN(n) || n < lim[0] || n >= lim[1]) return false;
    }
    return true;
  }

  function describe(text) {
    var parts = [];
    if (text.trim()) parts.push("\u201c" + text.trim() + "\u201d");
    document.querySelectorAll("select.row-filter").forEach(function (s) {
      if (s.value) parts.push(s.options[s.selectedIndex].text);
    });
    return parts.join(", ");
  }

  function applyFilter() {
    var input = document.getElementById("filter");
    var text = input ? input.value : "";
    var words = text.toLowerCase().split(/\s+/).filter(Boolean);
    var active = words.length > 0 || Array.prototype.some.call(
      document.querySelectorAll("select.row-filter"), function (s) { return !!s.value; });
    document.querySelectorAll("table.sortable").forEach(function (table) {
      var shown = 0;
      Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
        if (row.classList.contains("reference")) return; // the rows to read the others against stay
        var t = row.textContent.toLowerCase();
        row.hidden = !(words.every(function (w) { return t.indexOf(w) >= 0; }) && passesSelects(row));
        if (!row.hidden) shown++;
      });
      var msg = noMatch(table);
      msg.hidden = !(active && shown === 0 && table.tBodies[0].querySelector("tr:not(.reference)"));
      var noun = table.getAttribute("data-noun") || "submission";
      msg.textContent = msg.hidden ? "" : "No " + noun + " matches " + describe(text) + ".";
    });
  }

  function setUpFilter(input) {
    input.addEventListener("input", applyFilter);
    document.querySelectorAll("select.row-filter").forEach(function (s) {
      s.addEventListener("change", applyFilter);
    });
    if (input.value || selected("filter-training") || selected("filter-size") || selected("filter-arch")) {
      applyFilter();
    }
  }

  // Column chooser: a checkbox per column key; the choice applies to every board table on the page.
  function loadChoice() {
    try { return JSON.parse(window.localStorage.getItem(STORE) || "{}") || {}; } catch (e) { return {}; }
  }

  function saveChoice(choice) {
    try { window.localStorage.setItem(STORE, JSON.stringify(choice)); } catch (e) { /* private mode: no memory */ }
  }

  function showColumn(colKey, on) {
    document.querySelectorAll("table.board").forEach(function (table) {
      var ths = table.tHead.rows[0].cells;
      for (var i = 0; i < ths.length; i++) {
        if (ths[i].getAttribute("data-col") !== colKey) continue;
        ths[i].classList.toggle("off", !on);
        Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
          if (row.cells[i]) row.cells[i].classList.toggle("off", !on);
        });
      }
    });
    document.querySelectorAll("details.columns input[data-col]").forEach(function (box) {
      if (box.getAttribute("data-col") === colKey) box.checked = on;
    });
  }

  function setUpColumns() {
    var boxes = document.querySelectorAll("details.columns input[data-col]");
    if (!boxes.length) return;
    var defaults = {};
    boxes.forEach(function (box) { defaults[box.getAttribute("data-col")] = box.defaultChecked; });
    var choice = loadChoice();
    Object.keys(choice).forEach(function (k) {
      if (k in defaults && choice[k] !== defaults[k]) showColumn(k, !!choice[k]);
    });
    boxes.forEach(function (box) {
      box.addEventListener("change", function () {
        var k = box.getAttribute("data-col");
        var c = loadChoice();
        c[k] = box.checked;
        saveChoice(c);
        showColumn(k, box.checked);
      });
    });
    document.querySelectorAll("details.columns button.reset").forEach(function (b) {
      b.addEventListener("click", function () {
        saveChoice({});
        Object.keys(defaults).forEach(function (k) { showColumn(k, defaults[k]); });
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
    setUpColumns();
    var filter = document.getElementById("filter");
    if (filter) setUpFilter(filter);
    document.querySelectorAll("select.image-switch").forEach(setUpSwitch);
  });
})();
