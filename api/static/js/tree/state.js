// The tree viewer's state: the loaded tree and what the view derives from it, one object shared by the
// viewer's modules. Who writes what: tree.js installs a tree (tree, segments, metadata, subtreeSize,
// knownChildren, source); expansion.js the open/closed sets and `mode`; canvas.js what is laid out and
// drawn; highlight.js the highlighted elements; search.js `search`; hover and pinned paths `hoverKey`
// and `pinned`; colour.js `colorBy` and `entropyMax`; keyboard.js `focusKey`; a page that draws its own
// kind of tree (compare.js) `colorOf` and `describe`.
/* global d3 */

export const state = {
  tree: null, // treedata.normalizeTree's result
  segments: null, // treedata.buildSegments's result
  metadata: {},
  mode: "segments", // "segments": runs of single-child nodes as one unit; "nodes": one unit per token
  expanded: new Set(), // keys of the nodes whose children are shown
  userCollapsed: new Set(), // keys the user closed: live growth leaves them closed
  knownChildren: new Map(), // node key -> number of children at the last update (live growth)
  subtreeSize: null, // node key -> nodes in its subtree, itself included
  hierarchy: null, // the d3 hierarchy laid out last
  all: null, // its descendants
  bounds: null, // their bounding box, in screen orientation
  culling: false, // only the units in view are drawn
  drawnView: null, // the area drawn when culling
  drawn: 0,
  unitEls: new Map(), // unit key -> <g>
  linkEls: new Map(), // target unit key -> <path>
  highlighted: [],
  hoverKey: null,
  pinned: null, // node whose path stays highlighted (completed path / search result)
  search: { query: "", matches: [], index: -1 },
  source: { job: null, file: null, name: null },
  initialTransform: d3.zoomIdentity,
  colorBy: "prob", // what a unit's colour shows: "prob" | "entropy" | "unexplored" (colour.js)
  entropyMax: null, // the tree's largest entropy, the top of the entropy scale (null: not computed yet)
  focusKey: null, // the unit the keyboard is on
  colorOf: null, // a page's own unit colouring over colorBy (compare.js: by side), or null
  describe: null, // a page's own details panel over details.js (compare.js: both distributions), or null
  afterDetails: null, // what a page adds to the details panel once drawn (tree.js: grow.js's buttons), or null
};
