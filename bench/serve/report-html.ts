// The benchmark's standalone HTML page: a latency-versus-load chart as inline SVG and a table of every load point.
// No scripts, no styles or fonts fetched: it opens offline.
import type { LoadResult } from './summary.js';

const escape = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const show = (x: number | null) => (x === null ? '–' : String(x));

/** About five round tick values from 0 to at least `max`. */
function ticks(max: number): number[] {
  const top = max > 0 ? max : 1;
  const raw = top / 5;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * magnitude).find((s) => s >= raw) ?? raw;
  return Array.from({ length: Math.ceil(top / step - 1e-9) + 1 }, (_, i) => Math.round(i * step * 1e6) / 1e6);
}

interface Series {
  name: string;
  color: string;
  /** Dashed line (the cache_prompt false runs when a run has both). */
  dashed: boolean;
  points: [number, number][];
}

/** Line chart of `series` (x, y ms) on shared linear axes from 0. */
function chart(series: Series[], xLabel: string): string {
  const w = 720, h = 360, left = 64, right = 170, top = 16, bottom = 48;
  const all = series.flatMap((s) => s.points);
  const xTicks = ticks(Math.max(0, ...all.map((p) => p[0])));
  const yTicks = ticks(Math.max(0, ...all.map((p) => p[1])));
  const xMax = xTicks[xTicks.length - 1], yMax = yTicks[yTicks.length - 1];
  const px = (x: number) => Math.round((left + (x / xMax) * (w - left - right)) * 10) / 10;
  const py = (y: number) => Math.round((h - bottom - (y / yMax) * (h - top - bottom)) * 10) / 10;
  const parts: string[] = [];
  for (const t of yTicks) {
    parts.push(`<line x1="${left}" x2="${w - right}" y1="${py(t)}" y2="${py(t)}" stroke="#ddd"/>`);
    parts.push(`<text x="${left - 6}" y="${py(t) + 4}" text-anchor="end">${t}</text>`);
  }
  for (const t of xTicks) parts.push(`<text x="${px(t)}" y="${h - bottom + 18}" text-anchor="middle">${t}</text>`);
  parts.push(`<line x1="${left}" x2="${w - right}" y1="${h - bottom}" y2="${h - bottom}" stroke="#333"/>`);
  parts.push(`<line x1="${left}" x2="${left}" y1="${top}" y2="${h - bottom}" stroke="#333"/>`);
  parts.push(`<text x="${(left + w - right) / 2}" y="${h - 8}" text-anchor="middle">${escape(xLabel)}</text>`);
  parts.push(`<text transform="translate(16 ${(top + h - bottom) / 2}) rotate(-90)" text-anchor="middle">latency (ms)</text>`);
  series.forEach((s, i) => {
    const sorted = [...s.points].sort((a, b) => a[0] - b[0]);
    const dash = s.dashed ? ' stroke-dasharray="6 4"' : '';
    if (sorted.length > 1) parts.push(`<polyline fill="none" stroke="${s.color}" stroke-width="2"${dash} points="${sorted.map(([x, y]) => `${px(x)},${py(y)}`).join(' ')}"/>`);
    for (const [x, y] of sorted) parts.push(`<circle cx="${px(x)}" cy="${py(y)}" r="3.5" fill="${s.color}"><title>${escape(s.name)}: ${y} ms at ${x}</title></circle>`);
    const ly = top + 12 + i * 20;
    parts.push(`<line x1="${w - right + 12}" x2="${w - right + 36}" y1="${ly - 4}" y2="${ly - 4}" stroke="${s.color}" stroke-width="2"${dash}/>`);
    parts.push(`<text x="${w - right + 42}" y="${ly}">${escape(s.name)}</text>`);
  });
  return `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${w} ${h}" width="${w}" height="${h}" font-family="sans-serif" font-size="12">${parts.join('')}</svg>`;
}

/** The page for a run: `config` as printed in the JSON, `results` one per load point. */
export function reportHtml(config: Record<string, unknown>, results: LoadResult[]): string {
  const closed = results.every((r) => r.mode === 'closed');
  const x = (r: LoadResult) => (closed ? (r.concurrency ?? 0) : r.request_throughput);
  // One set of lines per cache_prompt value; when a run has both, the false ones are dashed and named so.
  const settings = [...new Set(results.map((r) => r.cache_prompt))];
  const pick = (name: string, color: string, f: (r: LoadResult) => number | null): Series[] => settings.map((setting) => ({
    name: settings.length > 1 ? `${name}, cache ${setting ? 'on' : 'off'}` : name, color, dashed: settings.length > 1 && !setting,
    points: results.filter((r) => r.cache_prompt === setting).flatMap((r) => { const y = f(r); return y === null ? [] : [[x(r), y] as [number, number]]; }),
  }));
  const svg = chart([
    ...pick('TTFT p50', '#1f77b4', (r) => r.ttft_ms.p50),
    ...pick('TTFT p99', '#d62728', (r) => r.ttft_ms.p99),
    ...pick('ITL p50', '#2ca02c', (r) => r.itl_ms.p50),
  ], closed ? 'concurrency (clients)' : 'achieved request rate (req/s)');
  const serial = results.some((r) => r.serial_baseline !== undefined);
  const head = [
    'load', 'cache_prompt', 'completed', 'failed', 'errors', 'req/s', 'output tok/s', 'TTFT p50', 'TTFT p90', 'TTFT p99', 'hit requests', 'TTFT hit p50',
    'TTFT miss p50', 'ITL p50', 'ITL p99', 'E2E p50', 'E2E p99', 'cached tokens', ...(serial ? ['last first token', 'serial prefill', 'last / serial'] : []),
  ];
  const rows = results.map((r) => [
    r.mode === 'closed' ? `${r.concurrency} clients` : r.mode === 'poisson' ? `${r.rate} req/s` : 'burst', r.cache_prompt,
    r.completed, r.failed, Object.entries(r.errors).map(([code, n]) => `${code}: ${n}`).join(', '), r.request_throughput, r.output_throughput,
    show(r.ttft_ms.p50), show(r.ttft_ms.p90), show(r.ttft_ms.p99), r.hit_requests, show(r.ttft_hit_ms.p50), show(r.ttft_miss_ms.p50),
    show(r.itl_ms.p50), show(r.itl_ms.p99), show(r.e2e_ms.p50), show(r.e2e_ms.p99), r.total_cached_tokens,
    ...(serial ? [show(r.last_first_token_ms ?? null), show(r.serial_baseline?.total_ttft_ms ?? null), show(r.ratio_last_first_token_to_serial ?? null)] : []),
  ].map((v) => `<td>${escape(String(v))}</td>`).join(''));
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>loraserve serving benchmark</title>
<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}pre{background:#f6f6f6;padding:1em}</style>
</head><body>
<h1>loraserve serving benchmark</h1>
${svg}
<p>Latencies in ms. TTFT: time to the first streamed text; ITL: gaps between streamed chunks; E2E: whole request.
TTFT hit / miss: requests with / without prompt tokens restored from the prefix cache (cached_tokens &gt; 0 / = 0).${serial ? `
Last first token: from the burst's start; serial prefill: the burst's prompts sent one at a time beforehand (cache_prompt
false, max_tokens 1), their TTFTs summed.` : ''}</p>
<table><tr>${head.map((c) => `<th>${escape(c)}</th>`).join('')}</tr>
${rows.map((r) => `<tr>${r}</tr>`).join('\n')}
</table>
<h2>Configuration</h2>
<pre>${escape(JSON.stringify(config, null, 2))}</pre>
</body></html>
`;
}
