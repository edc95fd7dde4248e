/**
 * Which of the node's rule sources the `nat` rule reads: the operator's `--nat-source`.
 *
 * @module
 */

/**
 * `iptables` reads `iptables-save`/`ip6tables-save`, `nftables` reads kube-proxy's nftables
 * tables, `auto` reads whichever the node has, `off` reads nothing (the `nat` rule is off).
 */
export type NatSource = "auto" | "iptables" | "nftables" | "off";
