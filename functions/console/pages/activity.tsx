/**
 * A site's activity over the last hour: sessions and throughput per appliance,
 * drawn on the server as SVG (no chart library, no script), one sample a
 * minute from the appliances' own reports. The site page reloads this
 * fragment every few seconds (data-refresh), so it is live without a page load.
 */
import type { FC } from 'hono/jsx';
import { HISTORY_MINUTES, type HistoryPoint } from '../../../model/index.js';

export interface ApplianceActivity {
  name: string;
  points: HistoryPoint[];
}

/** Distinct, colour-blind-safe line colours (Okabe-Ito), one per appliance in order; the legend's classes c0-c7 in assets.ts match. */
const COLOURS = ['#0072B2', '#D55E00', '#009E73', '#CC79A7', '#E69F00', '#56B4E9', '#000000', '#F0E442'];

const W = 720;
const H = 160;
const PAD = { left: 52, right: 14, top: 12, bottom: 26 };

/** A round upper bound for the axis: 1, 2 or 5 times a power of ten. */
export function niceMax(v: number): number {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  return ([1, 2, 5, 10].find((m) => m * p >= v) ?? 10) * p;
}

const MIB = 2 ** 20;

const LineChart: FC<{ title: string; unit: string; series: { name: string; values: [number, number][] }[]; now: number; format: (v: number) => string }> = (p) => {
  const from = p.now - HISTORY_MINUTES * 60_000;
  const max = niceMax(Math.max(0, ...p.series.flatMap((s) => s.values.map(([, v]) => v))));
  const x = (t: number) => PAD.left + ((t - from) / (p.now - from)) * (W - PAD.left - PAD.right);
  const y = (v: number) => H - PAD.bottom - (v / max) * (H - PAD.top - PAD.bottom);
  const latest = p.series.map((s) => `${s.name} ${s.values.length ? p.format(s.values.at(-1)![1]) : 'no data'}`).join(', ');
  return (
    <figure class="chart">
      <figcaption>
        <strong>{p.title}</strong> <span class="muted small">({p.unit}, last {HISTORY_MINUTES} minutes)</span>
      </figcaption>
      <svg class="chart" viewBox={`0 0 ${W} ${H}`} role="img" aria-label={`${p.title} over the last hour; now: ${latest}`}>
        {[0, 0.5, 1].map((f) => (
          <g>
            <line x1={PAD.left} x2={W - PAD.right} y1={y(max * f)} y2={y(max * f)} stroke="#d6dbe1" />
            <text x={PAD.left - 6} y={y(max * f) + 4} text-anchor="end" font-size="14" fill="#5b6570">
              {p.format(max * f)}
            </text>
          </g>
        ))}
        {[60, 45, 30, 15, 0].map((m) => (
          <text x={x(p.now - m * 60_000)} y={H - 6} text-anchor="middle" font-size="14" fill="#5b6570">
            {m ? `-${m} min` : 'now'}
          </text>
        ))}
        {p.series.map((s, i) => {
          const colour = COLOURS[i % COLOURS.length]!;
          const pts = s.values.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(' ');
          return (
            <g data-appliance={s.name} data-values={s.values.map(([, v]) => v).join(',')}>
              {s.values.length > 1 ? <polyline points={pts} fill="none" stroke={colour} stroke-width="2" /> : null}
              {s.values.map(([t, v]) => (
                <circle cx={x(t).toFixed(1)} cy={y(v).toFixed(1)} r="2.5" fill={colour} />
              ))}
            </g>
          );
        })}
      </svg>
    </figure>
  );
};

export const Activity: FC<{ appliances: ApplianceActivity[]; now: Date }> = ({ appliances, now }) => {
  const t = now.getTime();
  const sessions = appliances.map((a) => ({ name: a.name, values: a.points.map((p): [number, number] => [Date.parse(p.at), p.sessions]) }));
  const throughput = appliances.map((a) => ({ name: a.name, values: a.points.filter((p) => p.bytesPerSecond !== null).map((p): [number, number] => [Date.parse(p.at), p.bytesPerSecond! / MIB]) }));
  return (
    <div>
      <ul class="legend" aria-label="Appliances in the charts">
        {appliances.map((a, i) => (
          <li>
            <span class={`swatch c${i % COLOURS.length}`}></span> {a.name}
          </li>
        ))}
      </ul>
      {appliances.every((a) => a.points.length === 0) ? <p class="muted small">No reports in the last hour.</p> : null}
      <div class="charts">
        <LineChart title="Sessions" unit="targets streaming" series={sessions} now={t} format={(v) => (Number.isInteger(v) ? String(v) : v.toFixed(1))} />
        <LineChart title="Throughput" unit="MiB/s sent" series={throughput} now={t} format={(v) => (v >= 10 || v === 0 ? v.toFixed(0) : v.toFixed(1))} />
      </div>
    </div>
  );
};
