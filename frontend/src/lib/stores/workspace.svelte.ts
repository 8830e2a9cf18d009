// The editor's draft (language, version, script, stdin, the saved script it came from), kept in
// localStorage so a reload or a trip to another page does not lose it; and the runtimes list.
import { api } from '../api';
import type { Language, Runtimes } from '../api/types';

const KEY = 'kiln.workspace';
/** Scripts of recent runs, so "run again" from history can restore them. */
const RECENT_KEY = 'kiln.recent-scripts';
const RECENT_MAX = 50;

export interface Draft {
  lang: string;
  version: string;
  script: string;
  stdin: string;
  scriptId: string | null;
  scriptName: string | null;
}

const EMPTY: Draft = { lang: '', version: '', script: '', stdin: '', scriptId: null, scriptName: null };

function loadDraft(): Draft {
  try {
    const raw = localStorage.getItem(KEY);
    if (raw) return { ...EMPTY, ...(JSON.parse(raw) as Partial<Draft>) };
  } catch {
    // A corrupt draft is dropped.
  }
  return { ...EMPTY };
}

export function fileExtension(fileName: string): string {
  const dot = fileName.lastIndexOf('.');
  return dot > 0 ? fileName.slice(dot) : '';
}

/** The language whose file name has the extension of `fileName`. */
export function languageForFile(languages: Language[], fileName: string): { lang: string; version: string } | null {
  const ext = fileExtension(fileName).toLowerCase();
  if (!ext) return null;
  for (const language of languages) {
    const version = language.versions.find((v) => fileExtension(v.file_name).toLowerCase() === ext);
    if (version) return { lang: language.lang, version: version.version };
  }
  return null;
}

class Workspace {
  draft = $state<Draft>(typeof localStorage !== 'undefined' ? loadDraft() : { ...EMPTY });
  runtimes = $state<Runtimes | null>(null);
  runtimesError = $state<string | null>(null);

  language = $derived(this.runtimes?.languages.find((l) => l.lang === this.draft.lang) ?? null);
  version = $derived(this.language?.versions.find((v) => v.version === this.draft.version) ?? null);

  async loadRuntimes(): Promise<void> {
    if (this.runtimes) return;
    try {
      this.runtimes = await api.runtimes();
      this.runtimesError = null;
      const first = this.runtimes.languages[0];
      if (!this.language && first) this.pick(first.lang, first.default_version, true);
      else if (this.language && !this.version) this.draft.version = this.language.default_version;
    } catch (error) {
      this.runtimesError = String(error instanceof Error ? error.message : error);
    }
  }

  /** Chooses a language; an empty script or the previous example becomes the new example. */
  pick(lang: string, version: string, replaceScript = false): void {
    const previousExample = this.version?.example;
    this.draft.lang = lang;
    this.draft.version = version;
    const example = this.version?.example ?? '';
    if (replaceScript || this.draft.script.trim() === '' || this.draft.script === previousExample) {
      this.draft.script = example;
    }
  }

  loadExample(): void {
    if (this.version) this.draft.script = this.version.example;
  }

  load(draft: Partial<Draft>): void {
    Object.assign(this.draft, draft);
  }

  save(): void {
    localStorage.setItem(KEY, JSON.stringify(this.draft));
  }

  /** Sign-out: the next person at this browser does not see the scripts. */
  forget(): void {
    Object.assign(this.draft, { ...EMPTY, lang: this.draft.lang, version: this.draft.version });
    this.loadExample();
    localStorage.removeItem(KEY);
    localStorage.removeItem(RECENT_KEY);
  }

  remember(executionId: string, script: string, stdin: string): void {
    try {
      const recent = JSON.parse(localStorage.getItem(RECENT_KEY) ?? '[]') as [string, string, string][];
      recent.unshift([executionId, script, stdin]);
      localStorage.setItem(RECENT_KEY, JSON.stringify(recent.slice(0, RECENT_MAX)));
    } catch {
      // Storage full or disabled: "run again" falls back to an empty script.
    }
  }

  recall(executionId: string): { script: string; stdin: string } | null {
    try {
      const recent = JSON.parse(localStorage.getItem(RECENT_KEY) ?? '[]') as [string, string, string][];
      const hit = recent.find(([id]) => id === executionId);
      return hit ? { script: hit[1], stdin: hit[2] } : null;
    } catch {
      return null;
    }
  }
}

export const workspace = new Workspace();
