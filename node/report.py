"""Interactive one-file HTML reports of a backtest or a sweep (`strategy-node backtest --report`).

Charts are Plotly figures with plotly.js inlined in the page (``include_plotlyjs=True``): one
file that opens offline (no CDN, no fonts, no images fetched), zoomable, with hover. Plotly was
chosen over Bokeh because it is one pure-Python wheel with its JavaScript bundled (Bokeh pulls
in Jinja2, Pillow, Tornado, contourpy...), its candlestick, heatmap and shared-axis subplots
cover every chart here, and it is actively maintained.

A backtest report shows: the price (candles when bars are given, aggregated for display),
entry/exit markers and the strategy's indicators; equity against buy & hold; drawdown; a
monthly-returns heatmap and table; the metrics; the trades (long reasons wrap). A sweep report
adds the ranked table and a heatmap over two of the grid's parameters.

Large series are aggregated for display without dropping extremes: candles of B bars become
one candle (first open, highest high, lowest low, last close), and the equity curve comes from
the engine already downsampled to each run's min/max equity and deepest drawdown
(backtest.curves), so no chart contradicts the metrics beside it. Every value from a reply that
lands in HTML is escaped; the figures carry data only as JSON.
"""

from __future__ import annotations

import html
import math
from typing import Any, Sequence

import numpy as np

from contracts import BacktestResult, Performance, SweepRow

__all__ = ["backtest_report", "sweep_report", "aggregate_ohlc", "METRICS", "MAX_CANDLES"]

MAX_CANDLES = 2_000  # candles drawn at most; more bars are aggregated

# (label, Performance field, format)
METRICS: list[tuple[str, str, str]] = [
    ("Start", "start", "text"), ("End", "end", "text"), ("Duration", "duration_s", "dur"),
    ("Bars", "bars", "int"), ("Warm-up bar", "warmup_bar", "int"),
    ("Initial cash", "initial_cash", "money"), ("Final equity", "final_equity", "money"),
    ("Peak equity", "peak_equity", "money"), ("Total return", "total_return", "pct"),
    ("Buy & hold return", "buy_and_hold_return", "pct"), ("Outperformance", "outperformance", "pct"),
    ("CAGR", "cagr", "pct"), ("Annualized return", "annualized_return", "pct"),
    ("Annualized volatility", "annualized_volatility", "pct"), ("Sharpe ratio", "sharpe_ratio", "num"),
    ("Sortino ratio", "sortino_ratio", "num"), ("Calmar ratio", "calmar_ratio", "num"),
    ("Alpha", "alpha", "pct"), ("Beta", "beta", "num"),
    ("Max drawdown", "max_drawdown", "pct"), ("Avg drawdown", "avg_drawdown", "pct"),
    ("Max drawdown duration", "max_drawdown_duration_s", "dur"),
    ("Avg drawdown duration", "avg_drawdown_duration_s", "dur"),
    ("Exposure", "exposure", "pct"), ("Trades", "total_trades", "int"), ("Win rate", "win_rate", "pct"),
    ("Profit factor", "profit_factor", "num"), ("Expectancy", "expectancy", "money"),
    ("Expectancy %", "expectancy_pct", "pct"), ("Kelly criterion", "kelly_criterion", "num"),
    ("SQN", "sqn", "num"), ("Best trade", "best_trade", "pct"), ("Worst trade", "worst_trade", "pct"),
    ("Avg trade", "avg_trade", "pct"), ("Avg win", "avg_win", "money"), ("Avg loss", "avg_loss", "money"),
    ("Max trade duration", "max_trade_duration_s", "dur"), ("Avg trade duration", "avg_trade_duration_s", "dur"),
    ("Commissions", "commissions", "money"), ("Buy signals", "buy_count", "int"), ("Sell signals", "sell_count", "int"),
]

SWEEP_COLUMNS = [("Return", "total_return", "pct"), ("Sharpe", "sharpe_ratio", "num"),
                 ("Max DD", "max_drawdown", "pct"), ("Trades", "total_trades", "int"),
                 ("Win rate", "win_rate", "pct"), ("Profit factor", "profit_factor", "num")]

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1d2330;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
.sub{color:#5b6475;margin-bottom:16px}
table{border-collapse:collapse;font-variant-numeric:tabular-nums}
th,td{padding:4px 10px;border-bottom:1px solid #e4e7ee;text-align:right;white-space:nowrap}
th{background:#f5f7fb;font-weight:600}td.l,th.l{text-align:left}
td.wrap{white-space:normal;overflow-wrap:anywhere;min-width:12em;max-width:28em;text-align:left}
.scroll{max-height:640px;overflow:auto}
.metrics{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:0 24px}
.metrics div{display:flex;justify-content:space-between;border-bottom:1px solid #eef0f5;padding:3px 0}
.neg{color:#b42318}.pos{color:#067647}.err{color:#b42318;text-align:left;white-space:normal;overflow-wrap:anywhere}
.note{color:#5b6475;font-size:12px}.best{background:#f0f7ff}
"""

_PLOT_CONFIG = {"displaylogo": False, "responsive": True, "scrollZoom": True}
_MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def fmt(value: Any, kind: str) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and not math.isfinite(value):
        return "–"
    if kind == "pct":
        return f"{value:,.2f} %"
    if kind == "money":
        return f"{value:,.2f}"
    if kind == "num":
        return f"{value:,.3f}"
    if kind == "int":
        return f"{int(value):,}"
    if kind == "dur":
        return _duration(float(value))
    return str(value)


def _duration(seconds: float) -> str:
    if seconds >= 86_400:
        return f"{seconds / 86_400:,.1f} d"
    if seconds >= 3_600:
        return f"{seconds / 3_600:,.1f} h"
    return f"{seconds / 60:,.0f} min"


def _sign_class(value: Any) -> str:
    if isinstance(value, (int, float)) and math.isfinite(value) and value != 0:
        return "neg" if value < 0 else "pos"
    return ""


def _times(stamps: Sequence[str]) -> np.ndarray:
    """ISO-8601 UTC stamps as datetime64 (plotly draws them as a date axis)."""
    return np.array([s[:-1] if s.endswith("Z") else s for s in stamps], dtype="datetime64[ns]")


# -- aggregation --------------------------------------------------------------------------------

def aggregate_ohlc(ts_ns: np.ndarray, o, h, l, c, limit: int = MAX_CANDLES):
    """At most ``limit`` candles: runs of equal length become one candle (first open, highest
    high, lowest low, last close, timed at the run's first bar), so no high or low is lost."""
    n = len(ts_ns)
    if n <= limit:
        return ts_ns, np.asarray(o), np.asarray(h), np.asarray(l), np.asarray(c)
    edges = (np.arange(limit + 1, dtype=np.int64) * n) // limit
    starts, ends = edges[:-1], edges[1:] - 1
    return (ts_ns[starts], np.asarray(o)[starts], np.maximum.reduceat(np.asarray(h), starts),
            np.minimum.reduceat(np.asarray(l), starts), np.asarray(c)[ends])


# -- figures ------------------------------------------------------------------------------------

def _figure_html(fig, first: bool) -> str:
    return fig.to_html(full_html=False, include_plotlyjs=first, config=_PLOT_CONFIG,
                       default_width="100%", validate=False)


def _main_figure(p: Performance, bars: Any | None):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    has_price = bars is not None and getattr(bars, "count", 0) > 0
    rows = 3 if has_price else 2
    fig = make_subplots(
        rows=rows, cols=1, shared_xaxes=True, vertical_spacing=0.04,
        row_heights=[0.5, 0.3, 0.2] if has_price else [0.6, 0.4],
        subplot_titles=(["Price, trades and indicators"] if has_price else []) + [
            "Equity vs buy & hold", "Drawdown [%]"])
    times = _times([pt.timestamp for pt in p.equity_curve])
    row = 1
    if has_price:
        ts = bars.column("timestamp")
        t, o, h, l, c = aggregate_ohlc(ts, bars.column("open"), bars.column("high"),
                                       bars.column("low"), bars.column("close"))
        fig.add_trace(go.Candlestick(x=t.astype("datetime64[ns]"), open=o, high=h, low=l, close=c,
                                     name="price", showlegend=False), row=1, col=1)
        for name, values in p.indicators.items():
            y = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
            fig.add_trace(go.Scatter(x=times, y=y, mode="lines", name=str(name), line={"width": 1.2}),
                          row=1, col=1)
        _trade_markers(fig, p, go)
        fig.update_xaxes(rangeslider_visible=False, row=1, col=1)
        row = 2
    fig.add_trace(go.Scatter(x=times, y=[pt.equity for pt in p.equity_curve], mode="lines",
                             name="equity", line={"color": "#1f6feb"}), row=row, col=1)
    if has_price and p.initial_cash:
        close = bars.column("close")
        ts = bars.column("timestamp")
        w = min(max(p.warmup_bar, 0), len(close) - 1)
        t, _, hi, lo, last = aggregate_ohlc(ts[w:], close[w:], close[w:], close[w:], close[w:])
        fig.add_trace(go.Scatter(x=t.astype("datetime64[ns]"), y=p.initial_cash * last / close[w],
                                 mode="lines", name="buy & hold", line={"color": "#98a2b3"}),
                      row=row, col=1)
    fig.add_trace(go.Scatter(x=times, y=[pt.drawdown_pct for pt in p.equity_curve], mode="lines",
                             fill="tozeroy", name="drawdown", line={"color": "#d92d20"}),
                  row=row + 1, col=1)
    fig.update_yaxes(tickformat=",.4~r", row=row, col=1)
    fig.update_yaxes(ticksuffix=" %", tickformat=",.3~r", row=row + 1, col=1)
    fig.update_layout(height=900 if has_price else 560, margin={"l": 60, "r": 20, "t": 40, "b": 30},
                      hovermode="x unified", legend={"orientation": "h", "y": 1.07})
    return fig


def _trade_markers(fig, p: Performance, go) -> None:
    groups = {"long entry": ([], [], [], "triangle-up", "#067647"),
              "short entry": ([], [], [], "triangle-down", "#b42318"),
              "exit": ([], [], [], "x", "#1d2330")}
    for t in p.trades:
        xs, ys, text, _, _ = groups[f"{t.side} entry"]
        xs.append(t.entry_time[:-1]), ys.append(t.entry_price), text.append(t.entry_reason or "")
        if t.exit_time and t.exit_price is not None:
            xs, ys, text, _, _ = groups["exit"]
            xs.append(t.exit_time[:-1]), ys.append(t.exit_price)
            text.append(f"{t.exit_reason or ''}: {t.return_pct:+.2f} %")
    for name, (xs, ys, text, symbol, color) in groups.items():
        if xs:
            fig.add_trace(go.Scatter(
                x=np.array(xs, dtype="datetime64[ns]"), y=ys, mode="markers", name=name, text=text,
                hovertemplate="%{text}<extra>" + name + "</extra>",
                marker={"symbol": symbol, "size": 9, "color": color}), row=1, col=1)


def _monthly(p: Performance) -> tuple[str, Any]:
    """The monthly-returns table (HTML) and heatmap figure (or None without months)."""
    if not p.monthly_returns:
        return "", None
    import plotly.graph_objects as go

    by_year: dict[int, list[float | None]] = {}
    for m in p.monthly_returns:
        year, month = int(m.month[:4]), int(m.month[5:7])
        by_year.setdefault(year, [None] * 12)[month - 1] = m.return_pct
    years = sorted(by_year)
    head = "<tr><th>Year</th>" + "".join(f"<th>{m}</th>" for m in _MONTHS) + "<th>Year</th></tr>"
    rows = []
    for y in years:
        values = by_year[y]
        total = math.prod(1 + v / 100 for v in values if v is not None) * 100 - 100
        cells = "".join(f"<td class='{_sign_class(v)}'>{_esc(fmt(v, 'pct'))}</td>" for v in values)
        rows.append(f"<tr><td>{y}</td>{cells}<td class='{_sign_class(total)}'><b>{_esc(fmt(total, 'pct'))}</b></td></tr>")
    table = f"<div class='scroll'><table class='monthly'>{head}{''.join(rows)}</table></div>"
    z = [[np.nan if v is None else v for v in by_year[y]] for y in years]
    bound = max((abs(v) for row in z for v in row if not math.isnan(v)), default=1.0) or 1.0
    fig = go.Figure(go.Heatmap(z=z, x=_MONTHS, y=[str(y) for y in years], colorscale="RdYlGn",
                               zmid=0, zmin=-bound, zmax=bound, texttemplate="%{z:.1f}",
                               hovertemplate="%{y} %{x}: %{z:.2f} %<extra></extra>",
                               colorbar={"ticksuffix": " %"}))
    fig.update_layout(height=min(120 + 26 * len(years), 900), margin={"l": 60, "r": 20, "t": 20, "b": 30},
                      yaxis={"autorange": "reversed", "type": "category"})
    return table, fig


# -- HTML blocks -------------------------------------------------------------------------------

def _metrics_block(p: Performance) -> str:
    cells = []
    for label, field, kind in METRICS:
        value = getattr(p, field, None)
        cells.append(f'<div><span>{_esc(label)}</span><span class="{_sign_class(value) if kind == "pct" else ""}">'
                     f"{_esc(fmt(value, kind))}</span></div>")
    return '<div class="metrics">' + "".join(cells) + "</div>"


def _trades_table(p: Performance) -> str:
    if not p.trades:
        return '<p class="note">No closed trades.</p>'
    head = ("<tr><th>#</th><th class='l'>Side</th><th class='l'>Entry</th><th>Entry price</th>"
            "<th class='l'>Exit</th><th>Exit price</th><th>Quantity</th><th>PnL</th><th>Return</th>"
            "<th>Bars</th><th>Entry bar</th><th>Exit bar</th><th class='l'>Entry reason</th>"
            "<th class='l'>Exit reason</th></tr>")
    rows = []
    for i, t in enumerate(p.trades, 1):
        rows.append(
            f"<tr><td>{i}</td><td class='l'>{_esc(t.side)}</td><td class='l'>{_esc(t.entry_time)}</td>"
            f"<td>{_esc(fmt(t.entry_price, 'money'))}</td><td class='l'>{_esc(t.exit_time or '–')}</td>"
            f"<td>{_esc(fmt(t.exit_price, 'money'))}</td><td>{_esc(fmt(t.quantity, 'num'))}</td>"
            f"<td class='{_sign_class(t.pnl)}'>{_esc(fmt(t.pnl, 'money'))}</td>"
            f"<td class='{_sign_class(t.return_pct)}'>{_esc(fmt(t.return_pct, 'pct'))}</td>"
            f"<td>{t.bars_held}</td><td>{_esc(fmt(t.entry_bar, 'int'))}</td><td>{_esc(fmt(t.exit_bar, 'int'))}</td>"
            f"<td class='wrap'>{_esc(t.entry_reason or '')}</td>"
            f"<td class='wrap'>{_esc(t.exit_reason or '')}</td></tr>")
    note = ""
    if p.trades_truncated:
        note = (f'<p class="note">Showing the first {len(p.trades):,} of {p.total_trades:,} trades '
                f"(raise options.max_trades for more).</p>")
    return f"<div class='scroll'><table class='trades'>{head}{''.join(rows)}</table></div>{note}"


def _page(title: str, subtitle: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{_esc(title)}</h1><div class=\"sub\">{_esc(subtitle)}</div>{body}</body></html>\n"
    )


def _error_block(result: BacktestResult) -> str:
    if result.error is None:
        return ""
    line = f" (line {result.error.line})" if result.error.line else ""
    return f'<p class="err">{_esc(result.error.code)}: {_esc(result.error.message)}{_esc(line)}</p>'


class _Figures:
    """Figure HTML with plotly.js inlined exactly once, in the first figure of the page."""

    def __init__(self) -> None:
        self.first = True

    def html(self, fig) -> str:
        out = _figure_html(fig, self.first)
        self.first = False
        return out


def _performance_blocks(p: Performance, bars: Any | None, figures: _Figures) -> list[str]:
    body = []
    if p.equity_curve:
        body.append(figures.html(_main_figure(p, bars)))
        if bars is None:
            body.append('<p class="note">No price chart: the report was made without the bars.</p>')
    else:
        body.append('<p class="note">No equity curve in this result (options.equity_points was 0).</p>')
    table, heat = _monthly(p)
    if heat is not None:
        body.append("<h2>Monthly returns</h2>" + figures.html(heat) + table)
    body.append("<h2>Metrics</h2>" + _metrics_block(p))
    body.append(f"<h2>Trades ({p.total_trades:,})</h2>" + _trades_table(p))
    return body


def backtest_report(result: BacktestResult, *, title: str = "Backtest", subtitle: str = "",
                    bars: Any | None = None, figures: Any | None = None) -> str:
    """Price with trades and indicators (when ``bars``, a BarArrays, is given), equity vs buy &
    hold, drawdown, monthly returns, metrics and trades of one backtest.

    ``figures``: how each figure becomes HTML (an object with ``html(fig) -> str``); by default
    plotly.js inlined once, for a one-file report (the dashboard passes its own, which embeds
    the figures as JSON for the page's plotly.js)."""
    figures = figures if figures is not None else _Figures()
    body = [_error_block(result)]
    p = result.performance
    if p is not None:
        body += _performance_blocks(p, bars, figures)
    if result.logs:
        body.append("<h2>Logs</h2><pre>" + _esc("\n".join(result.logs[-200:])) + "</pre>")
    return _page(title, subtitle, "".join(body))


def _sweep_heatmap(rows: list[SweepRow], names: list[str], rank_by: str):
    """The rank metric over the first two parameters (the best-ranked row per pair when other
    parameters vary too), or None for fewer than two parameters."""
    if len(names) < 2:
        return None
    import plotly.graph_objects as go

    a, b = names[0], names[1]
    best: dict[tuple, float] = {}
    for row in rows:  # ranked, best first: the first row of each pair is its best
        key = (row.parameters.get(a), row.parameters.get(b))
        value = getattr(row.performance, rank_by, None) if row.performance is not None else None
        if key not in best and value is not None and math.isfinite(value):
            best[key] = value
    xs = sorted({k[0] for k in best}, key=_sort_key)
    ys = sorted({k[1] for k in best}, key=_sort_key)
    if not xs or not ys:
        return None
    z = [[best.get((x, y), np.nan) for x in xs] for y in ys]
    fig = go.Figure(go.Heatmap(z=z, x=[str(x) for x in xs], y=[str(y) for y in ys], colorscale="Viridis",
                               hovertemplate=f"{_esc(a)}=%{{x}}, {_esc(b)}=%{{y}}: %{{z:.4g}}<extra></extra>",
                               colorbar={"title": {"text": _esc(rank_by)}}))
    fig.update_layout(height=480, margin={"l": 70, "r": 20, "t": 20, "b": 50},
                      xaxis={"title": {"text": _esc(a)}, "type": "category"},
                      yaxis={"title": {"text": _esc(b)}, "type": "category"})
    return fig


def _sort_key(value: Any):
    return (0, value, "") if isinstance(value, (int, float)) and not isinstance(value, bool) else (1, 0, str(value))


def sweep_report(result: BacktestResult, *, rank_by: str, title: str = "Parameter sweep",
                 subtitle: str = "", best: BacktestResult | None = None, bars: Any | None = None,
                 figures: Any | None = None) -> str:
    """The ranked sweep table, a heatmap of two parameters, then (when given) the full backtest
    of the best row (``figures`` as in `backtest_report`)."""
    rows: list[SweepRow] = list(result.sweep or [])
    names: list[str] = []
    for row in rows:
        for name in row.parameters:
            if name not in names:
                names.append(name)
    columns = [(label, field, kind) for label, field, kind in SWEEP_COLUMNS if field != rank_by]
    kind_of = {field: kind for _, field, kind in METRICS}
    head = ("<tr><th>Rank</th>" + "".join(f"<th>{_esc(n)}</th>" for n in names)
            + f"<th>{_esc(rank_by)}</th>" + "".join(f"<th>{_esc(label)}</th>" for label, _, _ in columns)
            + "<th class='l'>Error</th></tr>")
    body_rows = []
    for i, row in enumerate(rows, 1):
        p = row.performance
        cells = "".join(f"<td>{_esc(row.parameters.get(n, ''))}</td>" for n in names)
        metric = getattr(p, rank_by, None) if p is not None else None
        cells += f"<td><b>{_esc(fmt(metric, kind_of.get(rank_by, 'num')))}</b></td>"
        for _, field, kind in columns:
            value = getattr(p, field, None) if p is not None else None
            cells += f"<td class='{_sign_class(value) if kind == 'pct' else ''}'>{_esc(fmt(value, kind))}</td>"
        error = f"{row.error.code}: {row.error.message}" if row.error else ""
        cls = " class='best'" if i == 1 and row.error is None else ""
        body_rows.append(f"<tr{cls}><td>{i}</td>{cells}<td class='err'>{_esc(error)}</td></tr>")
    ok = sum(1 for r in rows if r.error is None)
    summary = (f'<p class="note">{len(rows):,} grid points, {ok:,} ran, ranked by {_esc(rank_by)} '
               f"(best first), over {result.bars:,} bars.</p>")
    figures = figures if figures is not None else _Figures()
    body = [_error_block(result)]
    heat = _sweep_heatmap(rows, names, rank_by)
    if heat is not None:
        body.append(f"<h2>{_esc(rank_by)} by {_esc(names[0])} and {_esc(names[1])}</h2>" + figures.html(heat))
    body += ["<h2>Ranked grid</h2>", summary,
             f"<div class='scroll'><table class='ranked'>{head}{''.join(body_rows)}</table></div>"]
    if best is not None and best.performance is not None and rows:
        params = ", ".join(f"{k}={v}" for k, v in rows[0].parameters.items())
        body.append(f"<h2>Best: {_esc(params)}</h2>")
        body += _performance_blocks(best.performance, bars, figures)
    return _page(title, subtitle, "".join(body))
