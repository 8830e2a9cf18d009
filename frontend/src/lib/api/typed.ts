// Types of requests and answers read off the OpenAPI document's `paths`, so a call whose path,
// method, body or answer does not match the document fails `npm run check`.
import type { paths } from './schema';
import { request, type Query } from './client';

type Method = 'get' | 'post' | 'put' | 'delete';
type Json<R> = R extends { content: { 'application/json': infer T } } ? T : undefined;
type Operation<P extends keyof paths, M extends Method> = NonNullable<paths[P][M]>;

/** The JSON of the first success status the document lists (200, 201, 202 or 204). */
export type Answer<P extends keyof paths, M extends Method> =
  Operation<P, M> extends { responses: infer R }
    ? 200 extends keyof R
      ? Json<R[200]>
      : 201 extends keyof R
        ? Json<R[201]>
        : 202 extends keyof R
          ? Json<R[202]>
          : undefined
    : never;

export type RequestBody<P extends keyof paths, M extends Method> =
  Operation<P, M> extends { requestBody?: { content: { 'application/json': infer B } } } ? B : never;

export type QueryOf<P extends keyof paths, M extends Method> =
  Operation<P, M> extends { parameters: { query?: infer Q } } ? NonNullable<Q> : never;

/** `/api/v1/x/{id}` with `{id}` filled in, encoded. */
export function fill(path: string, params: Record<string, string>): string {
  return path.replace(/\{(\w+)\}/g, (_, name: string) => {
    const value = params[name];
    if (value === undefined) throw new Error(`missing path parameter ${name}`);
    return encodeURIComponent(value);
  });
}

export function call<P extends keyof paths, M extends Method>(
  method: M,
  path: P,
  options: { params?: Record<string, string>; body?: RequestBody<P, M>; query?: QueryOf<P, M> } = {},
): Promise<Answer<P, M>> {
  const url = options.params ? fill(path, options.params) : path;
  return request<Answer<P, M>>(method.toUpperCase(), url, options.body, options.query as Query | undefined);
}
