// The corpus package ships containers only (docs/real-plugins.md); grokemu's tests drive them with the JS client.
export function info() { return 'corpus'; }
