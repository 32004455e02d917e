"""Self-contained HTML reports of a backtest or a sweep (`strategy-node backtest --report`).

One file, no scripts, no external CSS/fonts/CDN (the network may be closed): charts are
inline SVG drawn from `performance.equity_curve` (equity, and drawdown below zero), then the
metrics, the trades, and for a sweep the ranked table. Every value from a reply is HTML-escaped.
"""

from __future__ import annotations

import html
import math
from datetime import datetime, timezone
from typing import Any, Sequence

from contracts import BacktestResult, Performance, SweepRow

__all__ = ["backtest_report", "sweep_report", "line_chart", "METRICS"]

# (label, Performance field, format)
METRICS: list[tuple[str, str, str]] = [
    ("Start", "start", "text"), ("End", "end", "text"), ("Bars", "bars", "int"),
    ("Initial cash", "initial_cash", "money"), ("Final equity", "final_equity", "money"),
    ("Peak equity", "peak_equity", "money"), ("Total return", "total_return", "pct"),
    ("Buy & hold return", "buy_and_hold_return", "pct"), ("Outperformance", "outperformance", "pct"),
    ("CAGR", "cagr", "pct"), ("Annualized return", "annualized_return", "pct"),
    ("Annualized volatility", "annualized_volatility", "pct"), ("Sharpe ratio", "sharpe_ratio", "num"),
    ("Sortino ratio", "sortino_ratio", "num"), ("Calmar ratio", "calmar_ratio", "num"),
    ("Max drawdown", "max_drawdown", "pct"), ("Max drawdown duration", "max_drawdown_duration_s", "dur"),
    ("Exposure", "exposure", "pct"), ("Trades", "total_trades", "int"), ("Win rate", "win_rate", "pct"),
    ("Profit factor", "profit_factor", "num"), ("Expectancy", "expectancy", "money"),
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
.metrics{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:0 24px}
.metrics div{display:flex;justify-content:space-between;border-bottom:1px solid #eef0f5;padding:3px 0}
.neg{color:#b42318}.pos{color:#067647}.err{color:#b42318;text-align:left;white-space:normal}
svg{max-width:100%;height:auto;display:block}.note{color:#5b6475;font-size:12px}
.best{background:#f0f7ff}
"""


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


def _epoch(stamp: str) -> float | None:
    try:
        text = stamp[:-1] + "+00:00" if stamp.endswith("Z") else stamp
        parsed = datetime.fromisoformat(text)
    except (ValueError, TypeError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


def line_chart(times: Sequence[str], values: Sequence[float], *, title: str, color: str,
               fill_to_zero: bool = False, unit: str = "", width: int = 960, height: int = 260) -> str:
    """An inline SVG line (or area down from 0) chart of `values` over ISO `times`."""
    pad_l, pad_r, pad_t, pad_b = 70, 16, 28, 30
    points = [(t, v) for t, v in zip(times, values) if v is not None and math.isfinite(v)]
    head = (f'<svg viewBox="0 0 {width} {height}" '
            f'role="img" aria-label="{_esc(title)}">'
            f'<text x="{pad_l}" y="18" font-size="13" font-weight="600" fill="#1d2330">{_esc(title)}</text>')
    if not points:
        return head + f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" fill="#5b6475">no data</text></svg>'
    xs = [_epoch(t) for t, _ in points]
    if any(x is None for x in xs):
        xs = list(range(len(points)))
    ys = [v for _, v in points]
    lo, hi = min(ys), max(ys)
    if fill_to_zero:
        hi = max(hi, 0.0)
    if hi == lo:
        hi, lo = hi + 1.0, lo - 1.0
    x0, x1 = min(xs), max(xs)
    span_x = (x1 - x0) or 1.0
    plot_w, plot_h = width - pad_l - pad_r, height - pad_t - pad_b

    def px(x: float) -> float:
        return pad_l + (x - x0) / span_x * plot_w

    def py(y: float) -> float:
        return pad_t + (hi - y) / (hi - lo) * plot_h

    coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in zip(xs, ys))
    parts = [head]
    for frac in (0.0, 0.25, 0.5, 0.75, 1.0):  # grid and y labels
        y = lo + (hi - lo) * frac
        yy = py(y)
        parts.append(f'<line x1="{pad_l}" y1="{yy:.1f}" x2="{width - pad_r}" y2="{yy:.1f}" stroke="#eef0f5"/>')
        parts.append(f'<text x="{pad_l - 6}" y="{yy + 4:.1f}" font-size="11" text-anchor="end" '
                     f'fill="#5b6475">{_esc(f"{y:,.2f}{unit}")}</text>')
    parts.append(f'<text x="{pad_l}" y="{height - 8}" font-size="11" fill="#5b6475">{_esc(points[0][0][:10])}</text>')
    parts.append(f'<text x="{width - pad_r}" y="{height - 8}" font-size="11" text-anchor="end" '
                 f'fill="#5b6475">{_esc(points[-1][0][:10])}</text>')
    if fill_to_zero:
        base = py(0.0)
        area = f"{px(xs[0]):.1f},{base:.1f} {coords} {px(xs[-1]):.1f},{base:.1f}"
        parts.append(f'<polygon points="{area}" fill="{color}" fill-opacity="0.25" stroke="none"/>')
    parts.append(f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="1.5"/>')
    parts.append("</svg>")
    return "".join(parts)


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
            "<th>Bars</th><th class='l'>Entry reason</th><th class='l'>Exit reason</th></tr>")
    rows = []
    for i, t in enumerate(p.trades, 1):
        rows.append(
            f"<tr><td>{i}</td><td class='l'>{_esc(t.side)}</td><td class='l'>{_esc(t.entry_time)}</td>"
            f"<td>{_esc(fmt(t.entry_price, 'money'))}</td><td class='l'>{_esc(t.exit_time or '–')}</td>"
            f"<td>{_esc(fmt(t.exit_price, 'money'))}</td><td>{_esc(fmt(t.quantity, 'num'))}</td>"
            f"<td class='{_sign_class(t.pnl)}'>{_esc(fmt(t.pnl, 'money'))}</td>"
            f"<td class='{_sign_class(t.return_pct)}'>{_esc(fmt(t.return_pct, 'pct'))}</td>"
            f"<td>{t.bars_held}</td><td class='l'>{_esc(t.entry_reason or '')}</td>"
            f"<td class='l'>{_esc(t.exit_reason or '')}</td></tr>")
    note = ""
    if p.trades_truncated:
        note = (f'<p class="note">Showing the first {len(p.trades):,} of {p.total_trades:,} trades '
                f"(raise options.max_trades for more).</p>")
    return f"<table>{head}{''.join(rows)}</table>{note}"


def _charts(p: Performance) -> str:
    if not p.equity_curve:
        return '<p class="note">No equity curve in this result (options.equity_points was 0).</p>'
    times = [pt.timestamp for pt in p.equity_curve]
    equity = line_chart(times, [pt.equity for pt in p.equity_curve], title="Equity", color="#1f6feb")
    drawdown = line_chart(times, [pt.drawdown_pct for pt in p.equity_curve], title="Drawdown",
                          color="#d92d20", fill_to_zero=True, unit=" %")
    return equity + drawdown


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


def backtest_report(result: BacktestResult, *, title: str = "Backtest", subtitle: str = "") -> str:
    """Equity and drawdown charts, metrics and trades of one backtest."""
    body = [_error_block(result)]
    p = result.performance
    if p is not None:
        body.append(_charts(p))
        body.append("<h2>Metrics</h2>" + _metrics_block(p))
        body.append(f"<h2>Trades ({p.total_trades:,})</h2>" + _trades_table(p))
    if result.logs:
        body.append("<h2>Logs</h2><pre>" + _esc("\n".join(result.logs[-200:])) + "</pre>")
    return _page(title, subtitle, "".join(body))


def sweep_report(result: BacktestResult, *, rank_by: str, title: str = "Parameter sweep",
                 subtitle: str = "", best: BacktestResult | None = None) -> str:
    """The ranked sweep table, then (when given) the full backtest of the best row."""
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
    body = [_error_block(result), "<h2>Ranked grid</h2>", summary,
            f"<table>{head}{''.join(body_rows)}</table>"]
    if best is not None and best.performance is not None and rows:
        params = ", ".join(f"{k}={v}" for k, v in rows[0].parameters.items())
        body.append(f"<h2>Best: {_esc(params)}</h2>")
        body.append(_charts(best.performance))
        body.append("<h2>Metrics</h2>" + _metrics_block(best.performance))
        body.append(f"<h2>Trades ({best.performance.total_trades:,})</h2>" + _trades_table(best.performance))
    return _page(title, subtitle, "".join(body))
