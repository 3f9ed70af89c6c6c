// Every npm package the certs module uses, pinned to an exact version, in one
// place. PKI.js builds and signs the X.509 structures (with WebCrypto doing the
// cryptography); asn1js is its ASN.1 layer, for the few values PKI.js takes as
// raw ASN.1 (serial numbers, names, key usage bits, IP addresses).
export * as asn1js from "asn1js";
export * as pkijs from "pkijs";
