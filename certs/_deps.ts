// Every npm package the certs module uses, pinned to an exact version, in one
// place. PKI.js builds and signs the X.509 structures (with WebCrypto doing the
// cryptography); asn1js is its ASN.1 layer, for the few values PKI.js takes as
// raw ASN.1 (serial numbers, names, key usage bits, IP addresses).
export * as asn1js from "npm:asn1js@4.0.0";
export * as pkijs from "npm:pkijs@4.0.0";
