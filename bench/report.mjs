// Turns bench/run.sh's results.jsonl into a Markdown table with bakker's ratios.
import fs from 'node:fs';

const [file, count] = process.argv.slice(2);
const rows = fs.readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
const tools = [...new Set(rows.map((r) => r.tool))];
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const stat = (tool, phase) => {
  const rs = rows.filter((r) => r.tool === tool && r.phase === phase);
  return {
    n: rs.length,
    wall: median(rs.map((r) => r.wall)),
    cpu: median(rs.map((r) => r.user + r.sys)),
    rssMB: Math.max(...rs.map((r) => r.rssKB)) / 1024,
    durable: median(rs.map((r) => r.wall + r.syncAfter)),
  };
};
const f = (x, d = 2) => x.toFixed(d);
const out = [];
out.push(`Entries: ${count}; full: median of ${stat('bakker', 'full').n} rounds, incremental: median of ${stat('bakker', 'incremental').n} rounds (tools in rotated order); "durable" adds the \`sync\` that follows each run.`);
out.push('');
out.push('| tool | phase | wall s | cpu s | peak RSS MB | durable s | bakker wall ratio | bakker durable ratio |');
out.push('|---|---|---:|---:|---:|---:|---:|---:|');
for (const phase of ['full', 'incremental']) {
  const b = stat('bakker', phase);
  for (const t of tools) {
    const s = stat(t, phase);
    const ratio = t === 'bakker' ? '' : f(b.wall / s.wall);
    const dratio = t === 'bakker' ? '' : f(b.durable / s.durable);
    out.push(`| ${t} | ${phase} | ${f(s.wall)} | ${f(s.cpu)} | ${f(s.rssMB, 0)} | ${f(s.durable)} | ${ratio} | ${dratio} |`);
  }
}
console.log(out.join('\n'));
