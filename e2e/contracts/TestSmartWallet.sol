// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title TestSmartWallet
/// @notice A minimal EIP-1271 contract account for toolgate's end-to-end
/// tests: it holds tokens and approves exactly the signatures that its owner
/// EOA made over the hash being checked. It has no execution functions; the
/// only way its tokens move is an EIP-3009 authorization the token checks
/// through `isValidSignature`.
///
/// The owner signs the raw hash (for x402, the token's EIP-712 digest), with
/// no wallet-specific wrapping, so one owner signature is valid for every
/// wallet of that owner. That is fine for a test and wrong for a real wallet
/// (see ERC-7739).
contract TestSmartWallet {
    bytes4 private constant EIP1271_MAGIC = 0x1626ba7e;
    bytes4 private constant EIP1271_INVALID = 0xffffffff;
    // Upper bound for s in a canonical (low-s) secp256k1 signature (EIP-2).
    uint256 private constant HALF_CURVE_ORDER =
        0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0;

    /// @notice The EOA whose signatures this wallet accepts.
    address public immutable owner;

    constructor(address owner_) {
        require(owner_ != address(0), "TestSmartWallet: zero owner");
        owner = owner_;
    }

    /// @notice EIP-1271: 0x1626ba7e when `signature` is a 65-byte r‖s‖v
    /// signature (low s, v 27 or 28) of `hash` by the owner, 0xffffffff
    /// otherwise. Never reverts.
    function isValidSignature(bytes32 hash, bytes calldata signature) external view returns (bytes4) {
        if (signature.length != 65) {
            return EIP1271_INVALID;
        }
        bytes32 r = bytes32(signature[0:32]);
        bytes32 s = bytes32(signature[32:64]);
        uint8 v = uint8(signature[64]);
        if (uint256(s) > HALF_CURVE_ORDER || (v != 27 && v != 28)) {
            return EIP1271_INVALID;
        }
        address signer = ecrecover(hash, v, r, s);
        if (signer == address(0) || signer != owner) {
            return EIP1271_INVALID;
        }
        return EIP1271_MAGIC;
    }
}
