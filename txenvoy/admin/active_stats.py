# -*- test-case-name: tests.admin.test_active_stats -*-
"""
C{/stats?format=active-html}: Envoy's live stats page. The page holds no
stats itself: its script polls C{/stats?format=json&usedonly&
histogram_buckets=detailed&filter=...&type=...} (the URL Envoy's page
polls, relative to where the page was served, so an admin behind a path
prefix works), shows the stats that change most often first, up to
C{max-display-count}, and draws each histogram's buckets as a bar chart
with its percentiles, every C{update-interval} seconds.
"""

from html import escape

from txenvoy.stats.format import STAT_TYPES

_STYLE = """\
body { font-family: sans-serif; font-size: medium; }
.home-table { border-collapse: collapse; }
.home-data { text-align: left; padding: 4px; }
.option { padding: 4px 4px 4px 20px; text-align: right; }
#active-status { color: #666; margin: 8px 0; }
#active-content { font-family: monospace; white-space: pre; }
.histogram { margin: 12px 0; }
.histogram-name { font-family: monospace; font-weight: bold; }
.histogram-chart { display: flex; align-items: flex-end; height: 120px; gap: 2px;
  border-bottom: 1px solid #444; padding-top: 4px; }
.histogram-bar { background: #3b7dd8; min-width: 14px; position: relative; }
.histogram-bar:hover { background: #f90; }
.histogram-labels { display: flex; gap: 2px; font-size: x-small; }
.histogram-labels span { min-width: 14px; writing-mode: vertical-rl; }
.histogram-percentiles { font-family: monospace; font-size: small; color: #333; }
"""

# The page's own script: fetch, remember how often each stat changed, render.
_SCRIPT = """\
'use strict';
const paramIdPrefix = 'param-1-stats-';
const changes = new Map();

function setting(id, fallback) {
  const value = parseInt(document.getElementById(id).value, 10);
  return isNaN(value) || value <= 0 ? fallback : value;
}

function statsUrl() {
  const href = window.location.href;
  const at = href.indexOf('/stats?');
  const prefix = at == -1 ? '' : href.substring(0, at);
  const param = (name) => name + '=' + encodeURIComponent(
      document.getElementById(paramIdPrefix + name).value);
  return prefix + '/stats?format=json&usedonly&histogram_buckets=detailed&' +
      ['filter', 'type'].map(param).join('&');
}

function renderScalars(stats) {
  for (const stat of stats) {
    const seen = changes.get(stat.name);
    if (seen === undefined) {
      changes.set(stat.name, {name: stat.name, value: stat.value, changeCount: 0});
    } else if (seen.value !== stat.value) {
      seen.value = stat.value;
      seen.changeCount += 1;
    }
  }
  const current = new Set(stats.map((s) => s.name));
  const shown = Array.from(changes.values()).filter((s) => current.has(s.name));
  shown.sort((a, b) => (b.changeCount - a.changeCount) || (b.value - a.value) ||
      a.name.localeCompare(b.name));
  const max = setting('active-max-display-count', 50);
  document.getElementById('active-content').textContent = shown.slice(0, max)
      .map((s) => s.name + ': ' + s.value).join('\\n');
}

function renderHistogram(detail, supported) {
  const box = document.createElement('div');
  box.className = 'histogram';
  const title = document.createElement('div');
  title.className = 'histogram-name';
  title.textContent = detail.name;
  box.appendChild(title);
  const chart = document.createElement('div');
  chart.className = 'histogram-chart';
  const labels = document.createElement('div');
  labels.className = 'histogram-labels';
  const largest = Math.max(1, ...detail.totals.map((b) => b.count));
  for (const bucket of detail.totals) {
    const bar = document.createElement('div');
    bar.className = 'histogram-bar';
    bar.style.height = Math.max(2, Math.round(100 * bucket.count / largest)) + '%';
    bar.title = '[' + bucket.lower_bound + ', ' + (bucket.lower_bound + bucket.width) +
        '): ' + bucket.count;
    chart.appendChild(bar);
    const label = document.createElement('span');
    label.textContent = bucket.lower_bound;
    labels.appendChild(label);
  }
  box.appendChild(chart);
  box.appendChild(labels);
  const percentiles = document.createElement('div');
  percentiles.className = 'histogram-percentiles';
  percentiles.textContent = detail.percentiles.map((p, i) =>
      'P' + supported[i] + '=' + (p.cumulative === null ? '-' :
                                  Math.round(p.cumulative * 1000) / 1000)).join('  ');
  box.appendChild(percentiles);
  return box;
}

function render(data) {
  const scalars = [];
  const histograms = document.getElementById('active-histograms');
  histograms.replaceChildren();
  for (const stat of data.stats) {
    if (stat.histograms !== undefined) {
      for (const detail of stat.histograms.details) {
        if (detail.totals.length) {
          histograms.appendChild(renderHistogram(detail,
                                                 stat.histograms.supported_percentiles));
        }
      }
    } else if (typeof stat.value === 'number') {
      scalars.push(stat);
    }
  }
  renderScalars(scalars);
  document.getElementById('active-status').textContent =
      'Updated ' + new Date().toLocaleTimeString();
}

async function loadStats() {
  const url = statsUrl();
  try {
    const response = await fetch(url);
    render(await response.json());
  } catch (e) {
    document.getElementById('active-status').textContent = 'Error fetching ' + url + ': ' + e;
  }
  window.setTimeout(loadStats, 1000 * setting('active-update-interval', 5));
}

window.addEventListener('load', loadStats);
"""


def _typeOptions(selected):
    return "".join("<option value='%s'%s>%s</option>" % (
        t, " selected" if t == selected else "", t) for t in STAT_TYPES)


def activeStatsPage(filterText="", statType="All"):
    """
    The C{active-html} page, its C{filter} and C{type} fields preset from
    the request's query.
    """
    rows = [
        ("<input type='text' name='filter' id='param-1-stats-filter' value='%s' />"
         % (escape(filterText, quote=True),), "param-1-stats-filter",
         "Regular expression (Google re2) for filtering stats"),
        ("<select name='type' id='param-1-stats-type'>%s</select>" % (_typeOptions(statType),),
         "param-1-stats-type", "Stat types to include."),
        ("<input type='text' name='max-display-count' id='active-max-display-count' "
         "value=50 />", "active-max-display-count",
         "Maximum number of stats to display"),
        ("<input type='text' name='update-interval' id='active-update-interval' value=5 />",
         "active-update-interval", "Interval between updates, in seconds"),
    ]
    table = "".join(
        "<tr>\n  <td class='option'>%s</td>\n  <td class='home-data'><label for='%s'>%s"
        "</label></td>\n</tr>\n" % row for row in rows)
    return (
        "<!DOCTYPE html>\n<html lang='en'>\n<head>\n  <title>Envoy Admin</title>\n"
        "<style>\n" + _STYLE + "</style>\n</head>\n<body>\n"
        "<a href='./'>Admin home</a>\n"
        "<table class='home-table'>\n<tbody>\n" + table + "</tbody>\n</table>\n"
        "<div id='active-status'>Loading...</div>\n"
        "<div id='active-content'></div>\n"
        "<div id='active-histograms'></div>\n"
        "<script>\n" + _SCRIPT + "</script>\n</body>\n</html>\n")
