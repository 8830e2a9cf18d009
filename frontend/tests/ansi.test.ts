import { describe, expect, it } from 'vitest';
import { AnsiParser, applySgr, styleCss } from '../src/lib/ansi';

const plain = { fg: null, bg: null, bold: false, dim: false, italic: false, underline: false, inverse: false };

describe('AnsiParser', () => {
  it('splits text at colour changes and resets', () => {
    const segments = new AnsiParser().feed('a\x1b[31mred\x1b[0m b');
    expect(segments.map((s) => [s.text, s.style.fg])).toEqual([
      ['a', null],
      ['red', 'var(--ansi-1)'],
      [' b', null],
    ]);
  });

  it('keeps style across chunks and joins an escape split between two chunks', () => {
    const parser = new AnsiParser();
    const first = parser.feed('x\x1b[1;3');
    const second = parser.feed('2mgreen');
    const third = parser.feed(' still');
    expect(first.map((s) => s.text)).toEqual(['x']);
    expect(second).toEqual([{ text: 'green', style: { ...plain, bold: true, fg: 'var(--ansi-2)' } }]);
    expect(third[0]?.style.fg).toBe('var(--ansi-2)');
  });

  it('drops cursor movement, OSC titles and stray control characters', () => {
    const out = new AnsiParser().feed('\x1b[2K\x1b]0;title\x07ok\x07\x08\tend\n');
    expect(out.map((s) => s.text).join('')).toBe('ok\tend\n');
  });

  it('leaves markup as plain text', () => {
    const out = new AnsiParser().feed('<img src=x onerror=alert(1)>');
    expect(out[0]?.text).toBe('<img src=x onerror=alert(1)>');
  });
});

describe('applySgr', () => {
  it('understands 256-colour and true-colour codes', () => {
    expect(applySgr(plain, [38, 5, 196]).fg).toBe('rgb(255, 0, 0)');
    expect(applySgr(plain, [48, 5, 244]).bg).toBe('rgb(128, 128, 128)');
    expect(applySgr(plain, [38, 2, 1, 2, 3]).fg).toBe('rgb(1, 2, 3)');
    expect(applySgr(plain, [38, 2, 999, 2, 3]).fg).toBeNull();
    expect(applySgr(plain, [94]).fg).toBe('var(--ansi-12)');
  });

  it('styleCss swaps colours for inverse and sets weights', () => {
    const css = styleCss({ ...plain, fg: 'var(--ansi-1)', inverse: true, bold: true });
    expect(css).toBe('color: var(--output-bg); background-color: var(--ansi-1); font-weight: bold');
  });
});
