/** The dashboard page's files as text (see assets.js). */
export const PAGE_HTML: string;
export const APP_CSS: string;
/** page.js, an ES module that imports ./format.js. */
export const APP_JS: string;
/** The ES module /format.js: ../format.ts's functions, from their compiled source. */
export const FORMAT_JS: string;
