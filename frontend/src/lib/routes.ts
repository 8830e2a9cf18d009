// Hash routes (#/history, #/scripts...): the api serves one index.html and needs no fallback.
export type Route = 'editor' | 'history' | 'scripts' | 'settings' | 'login' | 'register';

const ROUTES: readonly Route[] = ['editor', 'history', 'scripts', 'settings', 'login', 'register'];
export const PUBLIC_ROUTES: readonly Route[] = ['login', 'register'];

export function parseHash(hash: string): { route: Route; params: Record<string, string> } {
  const raw = hash.replace(/^#\/?/, '');
  const [path = '', query = ''] = raw.split('?');
  const route = (ROUTES as readonly string[]).includes(path) ? (path as Route) : 'editor';
  return { route, params: Object.fromEntries(new URLSearchParams(query)) };
}
