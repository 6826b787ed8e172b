// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title TestPermit2
/// @notice The part of Uniswap's Permit2 that the x402 `upto` scheme uses,
/// written from its specification for toolgate's end-to-end tests:
/// `permitWitnessTransferFrom` for one token (the signature transfer with a
/// witness), the unordered nonce bitmap (`nonceBitmap`, and
/// `invalidateUnorderedNonces` for a payer who wants to cancel), and
/// `DOMAIN_SEPARATOR`.
///
/// The signed message is hashed exactly as the canonical contract hashes it
/// (and as viem signs it for the x402 EVM client): EIP-712 domain {name "Permit2",
/// chainId, verifyingContract} with no version, and the struct
/// PermitWitnessTransferFrom(TokenPermissions permitted,address spender,
/// uint256 nonce,uint256 deadline,<witness>) whose spender is the caller.
///
/// Its runtime code is placed with `anvil_setCode` at the canonical Permit2
/// address 0x000000000022D473030F116dDEE9F6B43aC78BA3, so the constructor
/// never runs: the domain separator is computed per call from
/// `block.chainid` and `address(this)`. Tokens must be approved to this
/// address (ERC-20 `approve`) before it can move them.
contract TestPermit2 {
    struct TokenPermissions {
        address token;
        uint256 amount;
    }

    struct PermitTransferFrom {
        TokenPermissions permitted;
        uint256 nonce;
        uint256 deadline;
    }

    struct SignatureTransferDetails {
        address to;
        uint256 requestedAmount;
    }

    bytes32 private constant DOMAIN_TYPEHASH = keccak256("EIP712Domain(string name,uint256 chainId,address verifyingContract)");
    bytes32 private constant NAME_HASH = keccak256("Permit2");
    bytes32 private constant TOKEN_PERMISSIONS_TYPEHASH = keccak256("TokenPermissions(address token,uint256 amount)");
    /// @dev The primary type's head; the caller's witness type string
    /// completes it ("Witness witness)TokenPermissions(...)Witness(...)").
    string private constant WITNESS_STUB =
        "PermitWitnessTransferFrom(TokenPermissions permitted,address spender,uint256 nonce,uint256 deadline,";
    bytes4 private constant EIP1271_MAGIC = 0x1626ba7e;

    /// @notice owner => word index => used-nonce bits (nonce = word << 8 | bit).
    mapping(address => mapping(uint256 => uint256)) public nonceBitmap;

    error SignatureExpired(uint256 signatureDeadline);
    error InvalidAmount(uint256 maxAmount);
    error InvalidNonce();
    error InvalidSignatureLength();
    error InvalidSignature();
    error InvalidSigner();
    error InvalidContractSignature();
    error TransferFailed();

    event UnorderedNonceInvalidation(address indexed owner, uint256 word, uint256 mask);

    /// @notice The EIP-712 domain separator for this chain and address.
    function DOMAIN_SEPARATOR() public view returns (bytes32) {
        return keccak256(abi.encode(DOMAIN_TYPEHASH, NAME_HASH, block.chainid, address(this)));
    }

    /// @notice Moves up to permit.permitted.amount of permit.permitted.token
    /// from owner to details.to, authorized by owner's signature over the
    /// permit, the caller as spender, and the witness (whose EIP-712 struct
    /// hash is `witness` and whose type is described by witnessTypeString).
    /// Each nonce can be used once; the permit expires after its deadline.
    function permitWitnessTransferFrom(
        PermitTransferFrom calldata permit,
        SignatureTransferDetails calldata details,
        address owner,
        bytes32 witness,
        string calldata witnessTypeString,
        bytes calldata signature
    ) external {
        if (block.timestamp > permit.deadline) revert SignatureExpired(permit.deadline);
        if (details.requestedAmount > permit.permitted.amount) revert InvalidAmount(permit.permitted.amount);
        _spendNonce(owner, permit.nonce);

        bytes32 typeHash = keccak256(abi.encodePacked(WITNESS_STUB, witnessTypeString));
        bytes32 permittedHash =
            keccak256(abi.encode(TOKEN_PERMISSIONS_TYPEHASH, permit.permitted.token, permit.permitted.amount));
        bytes32 structHash =
            keccak256(abi.encode(typeHash, permittedHash, msg.sender, permit.nonce, permit.deadline, witness));
        bytes32 digest = keccak256(abi.encodePacked(hex"1901", DOMAIN_SEPARATOR(), structHash));
        _checkSignature(owner, digest, signature);

        (bool ok, bytes memory ret) = permit.permitted.token.call(
            abi.encodeWithSignature("transferFrom(address,address,uint256)", owner, details.to, details.requestedAmount)
        );
        if (!ok || (ret.length > 0 && !abi.decode(ret, (bool)))) revert TransferFailed();
    }

    /// @notice Marks the nonces in mask of word as used, for the caller.
    function invalidateUnorderedNonces(uint256 word, uint256 mask) external {
        nonceBitmap[msg.sender][word] |= mask;
        emit UnorderedNonceInvalidation(msg.sender, word, mask);
    }

    function _spendNonce(address owner, uint256 nonce) private {
        uint256 word = nonce >> 8;
        uint256 bit = uint256(1) << (nonce & 0xff);
        uint256 bits = nonceBitmap[owner][word];
        if (bits & bit != 0) revert InvalidNonce();
        nonceBitmap[owner][word] = bits | bit;
    }

    /// @dev ECDSA (65-byte r‖s‖v, or 64-byte EIP-2098 r‖vs) for accounts
    /// without code; EIP-1271 for contract accounts.
    function _checkSignature(address owner, bytes32 digest, bytes calldata signature) private view {
        if (owner.code.length > 0) {
            (bool ok, bytes memory ret) =
                owner.staticcall(abi.encodeWithSelector(EIP1271_MAGIC, digest, signature));
            if (!ok || ret.length < 32 || abi.decode(ret, (bytes4)) != EIP1271_MAGIC) revert InvalidContractSignature();
            return;
        }
        bytes32 r;
        bytes32 s;
        uint8 v;
        if (signature.length == 65) {
            r = bytes32(signature[0:32]);
            s = bytes32(signature[32:64]);
            v = uint8(signature[64]);
        } else if (signature.length == 64) {
            r = bytes32(signature[0:32]);
            bytes32 vs = bytes32(signature[32:64]);
            s = vs & bytes32(0x7fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff);
            v = uint8(uint256(vs >> 255)) + 27;
        } else {
            revert InvalidSignatureLength();
        }
        address signer = ecrecover(digest, v, r, s);
        if (signer == address(0)) revert InvalidSignature();
        if (signer != owner) revert InvalidSigner();
    }
}
