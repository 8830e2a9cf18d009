import { parseHash, type Route } from '../routes';

export { PUBLIC_ROUTES, parseHash, type Route } from '../routes';

class Router {
  route = $state<Route>('editor');
  /** Replaced as a whole on every hash change, never mutated. */
  params = $state.raw<Record<string, string>>({});

  constructor() {
    if (typeof window !== 'undefined') {
      this.sync();
      window.addEventListener('hashchange', () => this.sync());
    }
  }

  private sync(): void {
    const { route, params } = parseHash(window.location.hash);
    this.route = route;
    this.params = params;
  }

  go(route: Route, params?: Record<string, string>): void {
    const qs = params ? new URLSearchParams(params).toString() : '';
    window.location.hash = `#/${route}${qs ? `?${qs}` : ''}`;
    this.sync();
  }
}

export const router = new Router();
