/* eslint-disable no-control-regex -- matching ESC/BEL control sequences is this module's job */
// ANSI SGR colours to styled text segments. Output is rendered as text nodes inside spans built
// from these segments, never as HTML, so a program cannot inject markup into the page.

export interface AnsiStyle {
  fg: string | null;
  bg: string | null;
  bold: boolean;
  dim: boolean;
  italic: boolean;
  underline: boolean;
  inverse: boolean;
}

export interface Segment {
  text: string;
  style: AnsiStyle;
}

const PLAIN: AnsiStyle = { fg: null, bg: null, bold: false, dim: false, italic: false, underline: false, inverse: false };

/** Colours as CSS values: the 16 named ones are CSS variables so themes can tune them. */
function basic(n: number): string {
  return `var(--ansi-${n})`;
}

function xterm256(n: number): string | null {
  if (!Number.isInteger(n) || n < 0 || n > 255) return null;
  if (n < 16) return basic(n);
  if (n >= 232) {
    const v = 8 + (n - 232) * 10;
    return `rgb(${v}, ${v}, ${v})`;
  }
  const i = n - 16;
  const level = (x: number) => (x === 0 ? 0 : 55 + x * 40);
  return `rgb(${level(Math.floor(i / 36))}, ${level(Math.floor(i / 6) % 6)}, ${level(i % 6)})`;
}

function channel(n: number | undefined): number | null {
  return n !== undefined && Number.isInteger(n) && n >= 0 && n <= 255 ? n : null;
}

/** Applies one SGR parameter list to a style. */
export function applySgr(style: AnsiStyle, params: number[]): AnsiStyle {
  const next = { ...style };
  if (params.length === 0) params = [0];
  for (let i = 0; i < params.length; i++) {
    const p = params[i] ?? 0;
    if (p === 0) Object.assign(next, PLAIN);
    else if (p === 1) next.bold = true;
    else if (p === 2) next.dim = true;
    else if (p === 3) next.italic = true;
    else if (p === 4) next.underline = true;
    else if (p === 7) next.inverse = true;
    else if (p === 22) next.bold = next.dim = false;
    else if (p === 23) next.italic = false;
    else if (p === 24) next.underline = false;
    else if (p === 27) next.inverse = false;
    else if (p >= 30 && p <= 37) next.fg = basic(p - 30);
    else if (p >= 90 && p <= 97) next.fg = basic(p - 90 + 8);
    else if (p === 39) next.fg = null;
    else if (p >= 40 && p <= 47) next.bg = basic(p - 40);
    else if (p >= 100 && p <= 107) next.bg = basic(p - 100 + 8);
    else if (p === 49) next.bg = null;
    else if (p === 38 || p === 48) {
      const mode = params[i + 1];
      let colour: string | null = null;
      if (mode === 5) {
        colour = xterm256(params[i + 2] ?? -1);
        i += 2;
      } else if (mode === 2) {
        const [r, g, b] = [channel(params[i + 2]), channel(params[i + 3]), channel(params[i + 4])];
        colour = r !== null && g !== null && b !== null ? `rgb(${r}, ${g}, ${b})` : null;
        i += 4;
      }
      if (p === 38) next.fg = colour;
      else next.bg = colour;
    }
  }
  return next;
}

/**
 * Streaming parser: feed chunks as they arrive (an escape sequence may be split across two);
 * SGR sequences change the style, other control sequences are dropped.
 */
export class AnsiParser {
  private style: AnsiStyle = { ...PLAIN };
  private pending = '';

  feed(chunk: string): Segment[] {
    const input = this.pending + chunk;
    this.pending = '';
    const out: Segment[] = [];
    let text = '';
    const flush = () => {
      if (text) {
        const last = out[out.length - 1];
        if (last && last.style === this.style) last.text += text;
        else out.push({ text, style: this.style });
        text = '';
      }
    };
    let i = 0;
    while (i < input.length) {
      const ch = input[i];
      if (ch !== '\x1b') {
        // Keep newlines and tabs; drop other C0 controls (bell, backspace...) that have no meaning here.
        const code = input.charCodeAt(i);
        if (code >= 0x20 || ch === '\n' || ch === '\t') text += ch;
        i++;
        continue;
      }
      const rest = input.slice(i);
      if (rest.length === 1) {
        this.pending = rest;
        break;
      }
      if (rest[1] === '[') {
        const m = /^\x1b\[([0-9;:?]*)([\x20-\x2f]*)([\x40-\x7e])/.exec(rest);
        if (!m) {
          // Incomplete (split across chunks) if only parameter bytes follow; else garbage.
          if (/^\x1b\[[0-9;:?\x20-\x2f]*$/.test(rest) && rest.length < 64) {
            this.pending = rest;
            break;
          }
          i += 2;
          continue;
        }
        if (m[3] === 'm' && !m[1]!.includes('?')) {
          flush();
          const params = m[1] ? m[1].split(/[;:]/).map((s) => (s === '' ? 0 : Number(s))) : [];
          this.style = applySgr(this.style, params);
        }
        i += m[0].length;
        continue;
      }
      if (rest[1] === ']') {
        // OSC (titles, hyperlinks): up to BEL or ST.
        const end = rest.search(/\x07|\x1b\\/);
        if (end === -1) {
          if (rest.length < 4096) {
            this.pending = rest;
            break;
          }
          i = input.length;
          continue;
        }
        i += end + (rest[end] === '\x07' ? 1 : 2);
        continue;
      }
      i += 2;
    }
    flush();
    return out;
  }
}

/** Inline CSS for a style, from colours this module produced (never from program output). */
export function styleCss(style: AnsiStyle): string {
  let fg = style.fg;
  let bg = style.bg;
  if (style.inverse) [fg, bg] = [bg ?? 'var(--output-bg)', fg ?? 'var(--output-fg)'];
  const parts: string[] = [];
  if (fg) parts.push(`color: ${fg}`);
  if (bg) parts.push(`background-color: ${bg}`);
  if (style.bold) parts.push('font-weight: bold');
  if (style.dim) parts.push('opacity: 0.7');
  if (style.italic) parts.push('font-style: italic');
  if (style.underline) parts.push('text-decoration: underline');
  return parts.join('; ');
}
