// Who is signed in. `null` user with `checked` means signed out.
import { api } from '../api';
import type { User } from '../api/types';

class AuthStore {
  user = $state<User | null>(null);
  checked = $state(false);

  async refresh(): Promise<void> {
    try {
      this.user = await api.me();
    } catch {
      this.user = null;
    } finally {
      this.checked = true;
    }
  }

  async login(username: string, password: string): Promise<void> {
    const { user } = await api.login({ username, password });
    this.user = user;
    this.checked = true;
  }

  async logout(): Promise<void> {
    try {
      await api.logout();
    } finally {
      this.user = null;
    }
  }

  /** The session expired server-side. */
  expired(): void {
    this.user = null;
  }
}

export const auth = new AuthStore();
