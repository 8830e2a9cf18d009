import { beforeEach, describe, expect, it, vi } from 'vitest';
import { DEFAULT_SETTINGS, SettingsStore, resolveTheme } from '../src/lib/stores/settings.svelte';
import type { Settings } from '../src/lib/api/types';

describe('SettingsStore', () => {
  beforeEach(() => {
    localStorage.clear();
    delete document.documentElement.dataset.theme;
  });

  it('loads from the server, fills missing editor keys and applies the theme', async () => {
    const api = {
      settings: vi.fn().mockResolvedValue({ theme: 'dark', editor: { font_size: 18 } }),
      saveSettings: vi.fn(),
    };
    const store = new SettingsStore(api as never);
    await store.load();
    expect(store.value.editor).toEqual({ ...DEFAULT_SETTINGS.editor, font_size: 18 });
    expect(document.documentElement.dataset.theme).toBe('dark');
    expect(localStorage.getItem('kiln.theme')).toBe('dark');
  });

  it('saves, and rolls back when the server refuses', async () => {
    const next: Settings = { theme: 'light', editor: { font_size: 12, tab_size: 2, word_wrap: true, line_numbers: false } };
    const api = { settings: vi.fn(), saveSettings: vi.fn().mockResolvedValue(next) };
    const store = new SettingsStore(api);
    expect(await store.save(next)).toBe(true);
    expect(api.saveSettings).toHaveBeenCalledWith(next);
    expect(document.documentElement.dataset.theme).toBe('light');

    api.saveSettings.mockRejectedValueOnce(new Error('nope'));
    expect(await store.save({ ...next, theme: 'dark' })).toBe(false);
    expect(store.value.theme).toBe('light');
    expect(document.documentElement.dataset.theme).toBe('light');
    expect(store.error).toContain('nope');
  });

  it('auto follows the system preference', () => {
    expect(resolveTheme('auto', true)).toBe('dark');
    expect(resolveTheme('auto', false)).toBe('light');
    expect(resolveTheme('light', true)).toBe('light');
  });
});

describe('auto theme', () => {
  it('follows a change of the system preference', () => {
    const store = new SettingsStore({ settings: vi.fn(), saveSettings: vi.fn() });
    store.value.theme = 'auto';
    store.systemDark = false;
    store.apply();
    expect(document.documentElement.dataset.theme).toBe('light');
    store.systemDark = true;
    store.apply();
    expect(document.documentElement.dataset.theme).toBe('dark');
  });
});
