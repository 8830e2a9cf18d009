/// <reference types="vitest/config" />
import { defineConfig } from 'vite';
import { svelte } from '@sveltejs/vite-plugin-svelte';
import { svelteTesting } from '@testing-library/svelte/vite';

// `npm run dev` and `npm run preview` forward /api to a running api service (same origin in
// production, where the api serves dist/ itself). KILN_API_URL picks another one.
const api = process.env.KILN_API_URL ?? 'http://127.0.0.1:8080';
const proxy = { '/api': { target: api, changeOrigin: false } };

export default defineConfig({
  plugins: [svelte(), svelteTesting()],
  server: { proxy },
  preview: { proxy },
  build: {
    target: 'es2022',
    sourcemap: true,
    // CodeMirror and its grammars change less often than the app: their own cacheable chunk.
    rolldownOptions: {
      output: {
        codeSplitting: {
          groups: [
            { name: 'codemirror', test: /node_modules[\\/](@codemirror|@lezer|codemirror|style-mod|w3c-keyname|crelt)/ },
          ],
        },
      },
    },
  },
  test: {
    environment: 'jsdom',
    include: ['tests/**/*.test.ts'],
    setupFiles: ['tests/setup.ts'],
  },
});
