/** Browser stand-in for node:url (see README.md): the path of a URL. */
export const fileURLToPath = (url: string | URL): string => decodeURIComponent(new URL(String(url)).pathname);
