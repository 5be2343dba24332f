/**
 * Each command's help, built from the option table: only that command's options, grouped, with
 * the text that applies to that command.
 */
import { COMMAND_LINE, type Command, type Group, OPTIONS, type OptionDef } from './option-table.js';

const SUMMARY: Record<Command, string> = {
  source: `usage: ${COMMAND_LINE.source} --connect HOST:PORT [options]

Boots the guest, migrates it to a listening destination, prints the report.
Exit 0 completed, 1 failed or cancelled (the guest keeps running here), 2 bad usage.
SIGINT/SIGTERM cancel the migration.`,
  destination: `usage: ${COMMAND_LINE.destination} --listen HOST:PORT [options]

Waits for one migration, verifies it, runs the guest. The bound HOST:PORT is the first line on
stdout. Exit 0 when the guest runs here and checked itself clean, 1 on any failure, 2 bad usage.`,
  pair: `usage: ${COMMAND_LINE.pair} [options]

Runs a destination and a source as two processes on 127.0.0.1, migrates once with live progress,
and prints one report. Exit 0 completed and verified, 1 failed or cancelled, 2 bad usage.
Ctrl-C cancels the migration (the source guest keeps running); a second Ctrl-C ends both processes.`,
};

const GROUPS: readonly Group[] = [
  'Connection',
  'Guest',
  'Migration (QEMU names)',
  'Convergence policies',
  'Security',
  'Output',
];
const COLUMN = 29;
const WIDTH = 100;

/** Words into lines of at most `width` characters (a longer word gets a line of its own). */
function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  let line = '';
  for (const word of text.split(' ')) {
    if (line && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else line = line ? `${line} ${word}` : word;
  }
  if (line) lines.push(line);
  return lines;
}

export function usageText(command: Command): string {
  const out = [SUMMARY[command]];
  for (const group of GROUPS) {
    const lines: string[] = [];
    for (const [name, def] of Object.entries(OPTIONS) as [string, OptionDef][]) {
      if (def.group !== group || !def.commands.includes(command)) continue;
      const left = `  --${name}${def.arg ? ` ${def.arg}` : ''}`;
      const text = typeof def.help === 'string' ? def.help : (def.help[command] ?? '');
      const body = wrap(text, WIDTH - COLUMN).join(`\n${''.padEnd(COLUMN)}`);
      lines.push(
        left.length < COLUMN ? `${left.padEnd(COLUMN)}${body}` : `${left}\n${''.padEnd(COLUMN)}${body}`,
      );
    }
    if (lines.length > 0) out.push(`${group}:\n${lines.join('\n')}`);
  }
  return out.join('\n\n');
}

export function helpHint(command: Command): string {
  return `see '${COMMAND_LINE[command]} --help'`;
}
