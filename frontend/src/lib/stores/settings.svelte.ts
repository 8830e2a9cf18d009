// The user's settings, stored on the server; the theme is applied to <html data-theme>.
import { api as realApi } from '../api';
import { describeError } from '../api/client';
import type { Settings, Theme } from '../api/types';

export const DEFAULT_SETTINGS: Settings = {
  theme: 'auto',
  editor: { font_size: 14, tab_size: 4, word_wrap: false, line_numbers: true },
};

const THEME_KEY = 'kiln.theme';

/** The theme actually shown: `auto` follows the system preference. */
export function resolveTheme(theme: Theme, prefersDark: boolean): 'light' | 'dark' {
  return theme === 'auto' ? (prefersDark ? 'dark' : 'light') : theme;
}

function prefersDark(): boolean {
  return typeof window !== 'undefined' && !!window.matchMedia?.('(prefers-color-scheme: dark)').matches;
}

export class SettingsStore {
  value = $state<Settings>(structuredClone(DEFAULT_SETTINGS));
  loaded = $state(false);
  saving = $state(false);
  error = $state<string | null>(null);
  /** The system's colour preference, updated by App when it changes. */
  systemDark = $state(prefersDark());
  effectiveTheme = $derived(resolveTheme(this.value.theme, this.systemDark));

  private api: Pick<typeof realApi, 'settings' | 'saveSettings'>;

  constructor(api: Pick<typeof realApi, 'settings' | 'saveSettings'> = realApi) {
    this.api = api;
    const cached = typeof localStorage !== 'undefined' ? localStorage.getItem(THEME_KEY) : null;
    if (cached === 'light' || cached === 'dark' || cached === 'auto') this.value.theme = cached;
  }

  async load(): Promise<void> {
    try {
      const settings = await this.api.settings();
      this.value = { ...DEFAULT_SETTINGS, ...settings, editor: { ...DEFAULT_SETTINGS.editor, ...settings.editor } };
      this.loaded = true;
      this.error = null;
    } catch (error) {
      this.error = describeError(error);
    }
    this.apply();
  }

  async save(next: Settings): Promise<boolean> {
    const previous = this.value;
    this.value = next;
    this.apply();
    this.saving = true;
    try {
      this.value = await this.api.saveSettings(next);
      this.error = null;
      this.apply();
      return true;
    } catch (error) {
      this.value = previous;
      this.apply();
      this.error = describeError(error);
      return false;
    } finally {
      this.saving = false;
    }
  }

  apply(): void {
    if (typeof document === 'undefined') return;
    document.documentElement.dataset.theme = this.effectiveTheme;
    localStorage.setItem(THEME_KEY, this.value.theme);
  }
}

export const settings = new SettingsStore();
