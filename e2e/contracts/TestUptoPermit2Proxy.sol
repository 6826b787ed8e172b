// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @dev What the proxy needs of Permit2 (TestPermit2 implements it).
interface IPermit2WitnessTransfer {
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

    function permitWitnessTransferFrom(
        PermitTransferFrom calldata permit,
        SignatureTransferDetails calldata details,
        address owner,
        bytes32 witness,
        string calldata witnessTypeString,
        bytes calldata signature
    ) external;
}

/// @dev EIP-2612 permit, tried by settleWithPermit.
interface IERC2612 {
    function permit(address owner, address spender, uint256 value, uint256 deadline, uint8 v, bytes32 r, bytes32 s)
        external;
}

/// @title TestUptoPermit2Proxy
/// @notice A contract with the interface of the x402 `upto` scheme's
/// x402UptoPermit2Proxy (the ABI that the x402 EVM package 2.27 calls: `settle`,
/// `settleWithPermit`, `PERMIT2`, `WITNESS_TYPEHASH`,
/// `WITNESS_TYPE_STRING`), written from the scheme's specification
/// (specs/schemes/upto/scheme_upto_evm.md) for toolgate's end-to-end tests.
///
/// The payer signs a Permit2 PermitWitnessTransferFrom naming this contract
/// as spender, for at most permit.permitted.amount, with the witness
/// Witness(address to,address facilitator,uint256 validAfter). `settle`
/// lets only witness.facilitator move an amount of its choosing, at most the
/// permitted one and more than zero, and only to witness.to, not before
/// witness.validAfter; Permit2 checks the signature, the deadline and the
/// nonce, and moves the tokens.
///
/// Its runtime code is placed with `anvil_setCode` at the canonical address
/// 0x4020A4f3b7b90ccA423B9fabCc0CE57C6C240002; the constructor never runs,
/// so Permit2's address is a constant and the reentrancy lock starts unset.
contract TestUptoPermit2Proxy {
    struct Witness {
        address to;
        address facilitator;
        uint256 validAfter;
    }

    struct EIP2612Permit {
        uint256 value;
        uint256 deadline;
        bytes32 r;
        bytes32 s;
        uint8 v;
    }

    address private constant PERMIT2_ADDRESS = 0x000000000022D473030F116dDEE9F6B43aC78BA3;

    /// @notice The witness part of the Permit2 type string.
    string public constant WITNESS_TYPE_STRING =
        "Witness witness)TokenPermissions(address token,uint256 amount)Witness(address to,address facilitator,uint256 validAfter)";

    /// @notice The EIP-712 type hash of Witness.
    bytes32 public constant WITNESS_TYPEHASH = keccak256("Witness(address to,address facilitator,uint256 validAfter)");

    uint256 private _entered;

    event Settled();
    event SettledWithPermit();

    error AmountExceedsPermitted();
    error UnauthorizedFacilitator();
    error InvalidAmount();
    error InvalidOwner();
    error InvalidDestination();
    error PaymentTooEarly();
    error Permit2612AmountMismatch();
    error Reentered();

    modifier once() {
        if (_entered != 0) revert Reentered();
        _entered = 1;
        _;
        _entered = 0;
    }

    /// @notice The Permit2 contract this proxy spends through.
    function PERMIT2() external pure returns (address) {
        return PERMIT2_ADDRESS;
    }

    /// @notice Moves amount (at most the permitted amount) from owner to
    /// witness.to; only witness.facilitator may call it.
    function settle(
        IPermit2WitnessTransfer.PermitTransferFrom calldata permit,
        uint256 amount,
        address owner,
        Witness calldata witness,
        bytes calldata signature
    ) external once {
        _settle(permit, amount, owner, witness, signature);
        emit Settled();
    }

    /// @notice settle, after trying the payer's EIP-2612 permit of Permit2
    /// for the permitted amount (a failed permit is ignored: an existing
    /// approval may still cover the transfer).
    function settleWithPermit(
        EIP2612Permit calldata permit2612,
        IPermit2WitnessTransfer.PermitTransferFrom calldata permit,
        uint256 amount,
        address owner,
        Witness calldata witness,
        bytes calldata signature
    ) external once {
        if (permit2612.value != permit.permitted.amount) revert Permit2612AmountMismatch();
        try IERC2612(permit.permitted.token).permit(
            owner, PERMIT2_ADDRESS, permit2612.value, permit2612.deadline, permit2612.v, permit2612.r, permit2612.s
        ) {} catch {}
        _settle(permit, amount, owner, witness, signature);
        emit SettledWithPermit();
    }

    function _settle(
        IPermit2WitnessTransfer.PermitTransferFrom calldata permit,
        uint256 amount,
        address owner,
        Witness calldata witness,
        bytes calldata signature
    ) private {
        if (amount > permit.permitted.amount) revert AmountExceedsPermitted();
        if (msg.sender != witness.facilitator) revert UnauthorizedFacilitator();
        if (amount == 0) revert InvalidAmount();
        if (owner == address(0)) revert InvalidOwner();
        if (witness.to == address(0)) revert InvalidDestination();
        if (block.timestamp < witness.validAfter) revert PaymentTooEarly();
        bytes32 witnessHash = keccak256(abi.encode(WITNESS_TYPEHASH, witness.to, witness.facilitator, witness.validAfter));
        IPermit2WitnessTransfer(PERMIT2_ADDRESS).permitWitnessTransferFrom(
            permit,
            IPermit2WitnessTransfer.SignatureTransferDetails({to: witness.to, requestedAmount: amount}),
            owner,
            witnessHash,
            WITNESS_TYPE_STRING,
            signature
        );
    }
}
